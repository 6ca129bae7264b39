"""Meter simulator: reads/s of 80 registers, 1 and 50 clients, beside a static pymodbus server.

Figures, all from one run on one machine:

- ``gridclear-metersim serve`` with 50 SDM630 meters (household profiles, speed
  60: every read computes the registers from the physics at its simulated
  time), read by 1 and by 50 concurrent Modbus TCP clients, each client
  sending one request at a time (read input registers 0x0000, count 80, from
  its own unit id) for a fixed time;
- the same load on pymodbus's own ``ModbusTcpServer`` serving a static
  datastore (``SimDevice``/``SimData``, the 3.x API that carries over to 4.0)
  of the same 50 unit ids: the raw library figure;
- the ratio of the two (the figure to read: the machine is a noisy 2-core box,
  the load generator shares it with the server). Both servers run side by
  side and short runs alternate between them, so a change in the machine's
  load hits both; the figures are medians over the paired runs;
- 50 clients spread over a 2,007-meter site on nine ports, reading random
  meters: the simulator at the scale the issue asks for.

The load generator speaks Modbus TCP with pre-built frames over asyncio
streams, so it spends as little CPU as possible; it runs in this process, the
servers in their own.
"""

from __future__ import annotations

import asyncio
import random
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.harness import REPO_ROOT, BenchContext, Figure
from gridclear.devtools.metersim import MetersimProcess
from gridclear.devtools.net import free_port

UNITS = 50
COUNT = 80


def _frame(tid: int, unit: int, address: int = 0, count: int = COUNT) -> bytes:
    return struct.pack(">HHHBBHH", tid & 0xFFFF, 0, 6, unit, 0x04, address, count)


async def _client(
    host: str, port: int, units: list[int], until: float, counts: list[int], index: int
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    frames = [_frame(i + 1, unit) for i, unit in enumerate(units)]
    expected = 9 + 2 * COUNT
    done = 0
    try:
        while time.monotonic() < until:
            writer.write(frames[done % len(frames)])
            header = await reader.readexactly(9)
            if header[7] != 0x04:
                raise RuntimeError(f"exception reply {header[7]:#x} {header[8]:#x}")
            await reader.readexactly(expected - 9)
            done += 1
    finally:
        counts[index] = done
        writer.close()
        await writer.wait_closed()


def load(endpoints: list[tuple[str, int, list[int]]], clients: int, seconds: float) -> float:
    """Completed reads per second: ``clients`` connections, one request in flight each."""

    async def main() -> float:
        counts = [0] * clients
        until = time.monotonic() + seconds
        started = time.monotonic()
        tasks = []
        for i in range(clients):
            host, port, units = endpoints[i % len(endpoints)]
            mine = units[i % len(units) :] + units[: i % len(units)]
            tasks.append(_client(host, port, mine, until, counts, i))
        await asyncio.gather(*tasks)
        return sum(counts) / (time.monotonic() - started)

    return asyncio.run(main())


_PYMODBUS_SERVER = """
import asyncio, sys
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

async def main(port: int, units: int) -> None:
    devices = [
        SimDevice(
            id=unit,
            simdata=([SimData(0, values=False, datatype=DataType.BITS)],
                     [SimData(0, values=False, datatype=DataType.BITS)],
                     [SimData(0, count=400, values=0, datatype=DataType.REGISTERS)],
                     [SimData(0, count=400, values=0x4366, datatype=DataType.REGISTERS)]),
        )
        for unit in range(1, units + 1)
    ]
    server = ModbusTcpServer(devices, address=("127.0.0.1", port))
    await server.serve_forever()

asyncio.run(main(int(sys.argv[1]), int(sys.argv[2])))
"""


def _wait_listening(port: int, process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"pymodbus server exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("pymodbus server did not start")


@contextmanager
def _pymodbus_server() -> Iterator[int]:
    port = free_port()
    process = subprocess.Popen(  # our interpreter, our script
        [sys.executable, "-c", _PYMODBUS_SERVER, str(port), str(UNITS)],
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_listening(port, process)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=10)


def _paired_rates(
    clients: list[int], seconds: float, rounds: int, workdir: Path
) -> dict[int, tuple[list[float], list[float]]]:
    """Alternate short runs against both servers, so drifting machine load hits both alike."""
    units = list(range(1, UNITS + 1))
    rates: dict[int, tuple[list[float], list[float]]] = {n: ([], []) for n in clients}
    with (
        MetersimProcess(
            meters=[f"1-{UNITS}:sdm630:household"], speed=60, seed=1, workdir=workdir
        ) as sim,
        _pymodbus_server() as raw_port,
    ):
        for _ in range(rounds):
            for n in clients:
                rates[n][0].append(load([(sim.host, sim.port, units)], n, seconds))
                rates[n][1].append(load([("127.0.0.1", raw_port, units)], n, seconds))
    return rates


def _scale_rate(seconds: float, workdir: Path) -> tuple[int, float]:
    lines = ["speed = 60", "seed = 3"]
    for index in range(9):
        lines.append(f'[[bus]]\nname = "gw{index}"\nport = 0')
        lines.append('[[bus.meter]]\nunits = "1-223"\nmodel = "sdm630"\nprofile = "household+pv"')
    site = workdir / "scale.toml"
    site.write_text("\n".join(lines) + "\n")
    with MetersimProcess(site=site, workdir=workdir) as sim:
        shuffle = random.Random(5)
        endpoints = []
        for bus in sim.buses:
            units = list(bus.units)
            shuffle.shuffle(units)
            endpoints.append((bus.host or "127.0.0.1", bus.port or 0, units))
        meters = sum(len(b.units) for b in sim.buses)
        return meters, load(endpoints, 50, seconds)


def run(ctx: BenchContext) -> list[Figure]:
    seconds, rounds = (0.5, 1) if ctx.quick else (2.0, 5)
    clients = [1, 50]
    with tempfile.TemporaryDirectory(prefix="metersim-bench-") as scratch:
        workdir = Path(scratch)
        paired = _paired_rates(clients, seconds, rounds, workdir)
        meters, scale = _scale_rate(seconds * 2, workdir)
    figures: list[Figure] = []
    for n in clients:
        ours, raw = paired[n]
        ratios = [a / b for a, b in zip(ours, raw, strict=True)]
        spread = f"ratios {min(ratios):.2f}..{max(ratios):.2f} over {rounds} paired runs"
        figures += [
            Figure(
                f"metersim_{n}_clients",
                statistics.median(ours),
                "reads/s",
                f"median; {COUNT} input registers per read, {UNITS} SDM630 meters, "
                "physics per read",
            ),
            Figure(
                f"pymodbus_static_{n}_clients",
                statistics.median(raw),
                "reads/s",
                f"median; ModbusTcpServer, static SimDevice datastore, {UNITS} unit ids",
            ),
            Figure(
                f"ratio_{n}_clients",
                statistics.median(ratios),
                "x",
                f"metersim / raw pymodbus, median of paired runs; {spread}",
            ),
        ]
    figures.append(
        Figure(
            "metersim_scale_50_clients",
            scale,
            "reads/s",
            f"{meters} meters on 9 ports, random meters, {COUNT} registers per read",
        )
    )
    return figures


if __name__ == "__main__":
    from bench.harness import main

    raise SystemExit(main(["metersim", *sys.argv[1:]]))
