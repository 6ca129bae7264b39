"""The benchmark harness: discover, run, print a table, write JSON.

A benchmark is a module ``bench/bench_<name>.py`` whose docstring's first line
says what it measures and which defines::

    def run(ctx: BenchContext) -> list[Figure]: ...

``ctx`` starts the servers a benchmark asks for (``ctx.database_url``,
``ctx.redis_url``, ``ctx.mqtt_url``: throwaway local servers, or the ones named
by ``GRIDCLEAR_*_URL``) on first use and stops them afterwards. ``ctx.quick``
asks for a short run (a smoke test of the benchmark, not figures to publish).

These machines are noisy: a benchmark reports what it measured *in the same
run* as its baseline, and the ratio, rather than absolute numbers alone.
Results go to stdout as a table and to ``bench/results/<name>.json``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import time
import traceback
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from gridclear.cloud import env
from gridclear.devtools.localservices import (
    LocalService,
    MosquittoServer,
    PostgresServer,
    RedisServer,
)

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
BROKER_POLICY = REPO_ROOT / "deploy" / "mosquitto" / "conf.d"


@dataclass(frozen=True)
class Figure:
    """One measured figure: ``value`` in ``unit``, with what it means in ``note``."""

    name: str
    value: float
    unit: str
    note: str = ""


@dataclass
class BenchContext:
    """What a benchmark gets: servers on demand, a scratch folder, the quick flag."""

    run_dir: Path
    quick: bool = False
    _servers: dict[str, LocalService] = field(default_factory=dict)

    def _server(self, key: str, make: Callable[[], LocalService]) -> str:
        if key not in self._servers:
            server = make()
            print(f"  starting {server.name} ...", flush=True)
            server.start()
            self._servers[key] = server
        return self._servers[key].url

    @property
    def database_url(self) -> str:
        return os.environ.get(env.DATABASE_URL) or self._server(
            "postgres", lambda: PostgresServer(run_dir=self.run_dir)
        )

    @property
    def redis_url(self) -> str:
        return os.environ.get(env.REDIS_URL) or self._server(
            "redis", lambda: RedisServer(run_dir=self.run_dir)
        )

    @property
    def mqtt_url(self) -> str:
        return os.environ.get(env.MQTT_URL) or self._server(
            "mosquitto", lambda: MosquittoServer(run_dir=self.run_dir, policy_dir=BROKER_POLICY)
        )

    @contextmanager
    def fresh_database(self, prefix: str) -> Iterator[str]:
        """A new empty database on the benchmark's server, dropped afterwards."""
        name = f"{prefix}_{uuid.uuid4().hex[:8]}"
        admin_url = self.database_url
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        try:
            yield psycopg.conninfo.make_conninfo(admin_url, dbname=name)
        finally:
            with psycopg.connect(admin_url, autocommit=True) as conn:
                conn.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )

    def close(self) -> None:
        for server in reversed(list(self._servers.values())):
            server.stop()
        self._servers.clear()


def discover() -> dict[str, str]:
    """Benchmark name -> first line of its docstring."""
    found = {}
    for path in sorted(BENCH_DIR.glob("bench_*.py")):
        name = path.stem.removeprefix("bench_")
        doc = ""
        text = path.read_text()
        for quote in ('"""', "'''"):
            if text.lstrip().startswith(quote):
                doc = text.lstrip()[3:].split(quote, 1)[0].strip().splitlines()[0]
                break
        found[name] = doc
    return found


def format_table(rows: Sequence[tuple[str, Figure]]) -> str:
    """A plain-text table of figures, aligned for a terminal."""
    header = ("benchmark", "figure", "value", "unit", "note")
    cells = [header] + [
        (bench, fig.name, _format_value(fig.value), fig.unit, fig.note) for bench, fig in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = []
    for index, row in enumerate(cells):
        parts = [
            row[i].rjust(widths[i]) if i == 2 else row[i].ljust(widths[i]) for i in range(len(row))
        ]
        lines.append("  ".join(parts).rstrip())
        if index == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _format_value(value: float) -> str:
    if value == int(value) and abs(value) >= 100:
        return f"{int(value):,}"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.4g}"


def _machine() -> dict[str, Any]:
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def run_benchmark(name: str, ctx: BenchContext) -> list[Figure]:
    module = importlib.import_module(f"bench.bench_{name}")
    figures: list[Figure] = module.run(ctx)
    return figures


def write_json(name: str, figures: Sequence[Figure], *, quick: bool) -> Path:
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    document = {
        "benchmark": name,
        "quick": quick,
        "machine": _machine(),
        "figures": [asdict(f) for f in figures],
    }
    path.write_text(json.dumps(document, indent=2) + "\n")
    return path


def main(argv: Sequence[str] | None = None) -> int:
    available = discover()
    parser = argparse.ArgumentParser(
        prog="script/bench",
        description="Run gridclear's benchmarks and print their figures "
        "(results also written as JSON under bench/results/).",
        epilog="benchmarks: " + "; ".join(f"{name} ({doc})" for name, doc in available.items()),
    )
    parser.add_argument("names", nargs="*", metavar="NAME", help="benchmarks to run (default: all)")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    parser.add_argument(
        "--quick", action="store_true", help="short runs: check the benchmarks work, not figures"
    )
    args = parser.parse_args(argv)
    if args.list:
        for name, doc in available.items():
            print(f"{name:<20} {doc}")
        return 0
    unknown = [n for n in args.names if n not in available]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(available)}")
    names = args.names or list(available)

    import tempfile

    rows: list[tuple[str, Figure]] = []
    failed = []
    with tempfile.TemporaryDirectory(prefix="gridclear-bench-") as scratch:
        run_dir = Path(scratch)
        run_dir.chmod(0o755)
        ctx = BenchContext(run_dir=run_dir, quick=args.quick)
        try:
            for index, name in enumerate(names, 1):
                print(f"[{index}/{len(names)}] {name}: {available[name]}", flush=True)
                started = time.perf_counter()
                try:
                    figures = run_benchmark(name, ctx)
                except Exception:
                    traceback.print_exc()
                    failed.append(name)
                    continue
                path = write_json(name, figures, quick=args.quick)
                took = time.perf_counter() - started
                print(f"  done in {took:.1f} s -> {path.relative_to(REPO_ROOT)}", flush=True)
                rows += [(name, f) for f in figures]
        finally:
            ctx.close()
    if rows:
        print()
        print(format_table(rows))
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0
