"""Ingest end to end: pre-signed messages from many gateways through Mosquitto into PostgreSQL.

Method. 50 simulated gateways' messages are signed and encoded as MQTT PUBLISH packets
beforehand, so that neither signing nor a client library competes with the pipeline
for the machine's cores. One load generator process then sends them at QoS 1 through
the real broker, each gateway on its own connection keeping ``WINDOW`` messages
unacknowledged (:func:`bench.bench_baseline.publish_packets`), to ``gridclear-cloud
ingest`` worker processes (one shared-subscription group, one per core), which verify
every signature and store readings and raw messages. The clock runs from the first
publish until the database holds every message; the run fails unless exactly every
message is stored once, with nothing quarantined (zero loss). Two shapes: one reading
per message and 50 readings per message (a gateway batching).

Beside it, measured in the same run: the raw broker rate with the same load generator
(one connection) publishing to a paho subscriber that does nothing else, the same
path with a paho publisher, and one core's Ed25519 verification rate; the ingest rate
is reported as ratios to them. Broker, database, workers and the load generator share
the machine's cores; on a 2-core box that is the bottleneck, not the design.
"""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg
from psycopg import sql

from bench.bench_baseline import (
    ed25519_verify_rate,
    mqtt_qos1_rate,
    publish_packet,
    publish_packets,
    raw_qos1_rate,
)
from bench.harness import REPO_ROOT, BenchContext, Figure
from gridclear.cloud.storage.migrations import migrate
from gridclear.devtools.children import spawn_child
from gridclear.shared.keys import DeviceKey
from gridclear.shared.protocol import ClockState, ReadingsPayload, sign_readings
from gridclear.shared.readings import Reading
from gridclear.shared.topics import readings_topic

GATEWAYS = 50
WORKERS = int(os.environ.get("GRIDCLEAR_BENCH_INGEST_WORKERS", str(os.cpu_count() or 1)))
"""One per core: a worker runs at most one core of Python (its threads share the GIL).
On an idle 2-core machine 2 stored as much as 3; with other work on it, 3 stored more."""
WINDOW = int(os.environ.get("GRIDCLEAR_BENCH_INGEST_WINDOW", "32"))
"""Messages each gateway keeps unacknowledged (QoS 1 in flight), as the edge publisher does
by default (``PublisherSettings.max_inflight``): 1,600 for the 50."""
T0 = (time.time_ns() // 1_000_000 // 3_600_000 - 20) * 3_600_000
"""20 hours ago, on the hour: after the gateways' keys are valid from (a day before they
are registered), inside the plausibility window, and early enough that the last of the
50-reading messages (about 11 h on) is not in the future."""
CLI = str(Path(sys.executable).parent / "gridclear-cloud")


def _database(admin_url: str) -> str:
    name = f"bench_ingest_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = psycopg.conninfo.make_conninfo(admin_url, dbname=name)
    migrate(url)
    return url


def _device_id(i: int) -> str:
    return f"bench-gw-{i:03d}"


def _gateways(url: str) -> list[tuple[str, DeviceKey]]:
    gateways = [(_device_id(i), DeviceKey.generate()) for i in range(GATEWAYS)]
    with psycopg.connect(url, autocommit=True) as conn:
        for device_id, key in gateways:
            row = conn.execute(
                "INSERT INTO devices (device_id) VALUES (%s) RETURNING id", (device_id,)
            ).fetchone()
            assert row is not None
            conn.execute(
                "INSERT INTO device_keys (kid, device_pk, public_key, source)"
                " VALUES (%s, %s, %s, 'operator')",
                (key.kid, row[0], key.public.raw),
            )
    return gateways


def _sign(
    gateways: list[tuple[str, DeviceKey]], messages: int, per_message: int, prefix: str
) -> list[list[bytes]]:
    """``messages`` messages as PUBLISH packets, spread evenly: one list per gateway, in order."""
    state: dict[str, tuple[int, str | None]] = {device_id: (0, None) for device_id, _ in gateways}
    out: list[list[bytes]] = [[] for _ in gateways]
    for i in range(messages):
        device_id, key = gateways[i % len(gateways)]
        seq, prev = state[device_id]
        seq += 1
        base = T0 + seq * per_message * 1000
        payload = ReadingsPayload(
            device_id=device_id,
            seq=seq,
            signed_ms=base,
            prev=prev,
            clock=ClockState(synced=True),
            readings=tuple(
                Reading(
                    meter="m1",
                    ts_ms=base + j * 1000,
                    import_wh=seq * per_message + j,
                    export_wh=0,
                    power_w=1500,
                    voltage_v=(230.0, 231.0, 229.0),
                )
                for j in range(per_message)
            ),
        )
        signed = sign_readings(payload, key)
        state[device_id] = (seq, signed.digest)
        topic = readings_topic(device_id, prefix=prefix)
        out[i % len(gateways)].append(publish_packet(topic, signed.token.encode(), seq % 65535 + 1))
    return out


def _count(url: str) -> tuple[int, int, int]:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM raw_messages), (SELECT count(*) FROM readings),"
            " (SELECT count(*) FROM quarantine)"
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2])


def _reset(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE raw_messages, readings, quarantine, interval_dirty")


_LAST_STORED = """
SELECT (SELECT count(*) FROM unnest(%s::text[], %s::int8[]) AS w(device_id, seq)
        WHERE EXISTS (SELECT 1 FROM raw_messages m
                      WHERE m.device_pk = (SELECT id FROM devices WHERE device_id = w.device_id)
                        AND m.seq = w.seq)),
       (SELECT count(*) FROM quarantine)
"""


def _wait_stored(url: str, last: list[tuple[str, int]], want: int) -> None:
    """Return once ``want`` messages are stored or any is quarantined; polls every 20 ms.

    Counting every stored row 20 times a second would take a good part of a core from
    the pipeline as the tables grow, so the poll first asks only whether each gateway's
    last message is in (a few index probes), and counts all messages only from then on.
    """
    ids = [device_id for device_id, _ in last]
    seqs = [seq for _, seq in last]
    deadline = time.monotonic() + 600
    with psycopg.connect(url, autocommit=True) as conn:
        # Index probes whatever the (stale) statistics of the growing tables say.
        conn.execute("SET enable_hashjoin = off; SET enable_mergejoin = off")
        while True:
            row = conn.execute(_LAST_STORED, (ids, seqs)).fetchone()
            assert row is not None
            if row[1]:
                return
            if row[0] == len(last):
                counted = conn.execute("SELECT count(*) FROM raw_messages").fetchone()
                if counted is not None and counted[0] >= want:
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"not every message was stored after 600 s ({want} sent)")
            time.sleep(0.02)


def _worker_argv(
    client: str, url: str, mqtt_url: str, group: str, i: int, prefix: str
) -> list[str]:
    common = [
        "--database-url", url, "--mqtt-url", mqtt_url, "--group", group,
        "--client-id", f"gridclear-cloud:{group}-{i}", "--topic-prefix", prefix,
    ]  # fmt: skip
    if client == "old":
        # The comparison baseline: the same worker on the old home-made client.
        return [sys.executable, "-m", "bench._old_client_worker", *common]
    return [CLI, "ingest", *common, "--interval-refresh-s", "0"]


def _run_shape(
    ctx: BenchContext,
    url: str,
    streams: list[list[bytes]],
    per_message: int,
    prefix: str,
    client: str = "paho",
) -> tuple[float, float]:
    """(messages/s, readings/s) end to end; raises unless every message is stored once.

    ``client``: ``paho`` (the product, ``gridclear-cloud ingest``) or ``old`` (the
    comparison baseline, :mod:`bench._old_client_worker`).
    """
    # Gateway i's messages are streams[i], with sequence numbers from 1 (see _sign).
    last = [(_device_id(i), len(packets)) for i, packets in enumerate(streams) if packets]
    workers: list[subprocess.Popen[bytes]] = []
    group = f"bench{uuid.uuid4().hex[:6]}"
    for i in range(WORKERS):
        log = ctx.run_dir / f"ingest-worker-{group}-{i}.log"
        argv = _worker_argv(client, url, ctx.mqtt_url, group, i, prefix)
        workers.append(spawn_child(argv, log_path=log, cwd=REPO_ROOT))
    try:
        _wait_subscribed(ctx.run_dir, group)
        fork = multiprocessing.get_context("fork")
        publisher = fork.Process(
            target=publish_packets, args=(ctx.mqtt_url, streams), kwargs={"window": WINDOW}
        )
        started = time.perf_counter()
        publisher.start()
        want = sum(len(packets) for packets in streams)
        _wait_stored(url, last, want)
        elapsed = time.perf_counter() - started
        publisher.join(60)
        if publisher.exitcode != 0:
            raise RuntimeError(f"the load generator failed (exit code {publisher.exitcode})")
    finally:
        for worker in workers:
            worker.terminate()
            worker.wait(30)
    stored, readings, rejected = _count(url)
    if rejected or stored != want or readings != want * per_message:
        with psycopg.connect(url) as conn:
            reasons = conn.execute(
                "SELECT reason, min(detail), count(*) FROM quarantine GROUP BY reason"
            ).fetchall()
        raise RuntimeError(
            f"quarantined: {reasons}; "
            f"loss or refusal: {stored}/{want} messages, {readings}/{want * per_message}"
            f" readings, {rejected} quarantined"
        )
    return want / elapsed, want * per_message / elapsed


def _wait_subscribed(run_dir: Path, group: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        logs = [p.read_text() for p in run_dir.glob(f"ingest-worker-{group}-*.log")]
        if len(logs) == WORKERS and all("subscribed" in text for text in logs):
            return
        time.sleep(0.1)
    raise RuntimeError("the ingest workers did not subscribe")


def run(ctx: BenchContext) -> list[Figure]:
    scale = 40 if ctx.quick else 1
    # Long enough (about 20 s per shape here) to include what happens only now and
    # then: the workers' timed garbage collection (every 10 s), interval refreshes,
    # PostgreSQL checkpoints.
    single = 240_000 // scale
    batched = 40_000 // scale
    url = _database(ctx.database_url)
    gateways = _gateways(url)
    prefix = f"bench/{uuid.uuid4().hex[:6]}/"
    paho = mqtt_qos1_rate(ctx.mqtt_url, 20_000 // scale)
    broker = raw_qos1_rate(ctx.mqtt_url, 40_000 // scale)
    verify = ed25519_verify_rate(20_000 // scale)
    print(f"  signing {single} + {batched} messages ...", flush=True)
    one = _sign(gateways, single, 1, prefix)
    fifty = _sign(gateways, batched, 50, prefix)
    load_before = os.getloadavg()
    msg1, _ = _run_shape(ctx, url, one, 1, prefix)
    _reset(url)
    msg50, rd50 = _run_shape(ctx, url, fifty, 50, prefix)
    _reset(url)
    # The comparison baseline, same run, same messages: the old home-made client.
    old1, _ = _run_shape(ctx, url, one, 1, prefix, client="old")
    _reset(url)
    old50, _ = _run_shape(ctx, url, fifty, 50, prefix, client="old")
    load = f"load {load_before[0]:.1f} before, {os.getloadavg()[0]:.1f} after (1-min avg)"
    workers = f"{WORKERS} worker processes, {GATEWAYS} gateways x {WINDOW} in flight"
    old = "comparison baseline (bench/_old_mqtt_client.py)"
    return [
        Figure("mqtt_qos1_raw_to_paho", broker, "msg/s", "raw broker path, same generator"),
        Figure("mqtt_qos1_paho_to_paho", paho, "msg/s", "paho publisher instead"),
        Figure("ed25519_verify_one_core", verify, "verifies/s", "PyNaCl, same run"),
        Figure("ingest_1_reading", msg1, "msg/s", f"paho-mqtt; stored, zero loss; {workers}"),
        Figure("ingest_1_reading_vs_broker", msg1 / broker, "ratio", "of raw broker (goal 0.30)"),
        Figure("ingest_1_reading_vs_verify", msg1 / verify, "ratio", "of one core's verifies"),
        Figure("ingest_50_readings_msgs", msg50, "msg/s", f"paho-mqtt; 50 each; {workers}"),
        Figure("ingest_50_readings", rd50, "readings/s", "paho-mqtt; stored, zero loss"),
        Figure("ingest_50_readings_vs_verify", rd50 / verify, "ratio", "of verifies (goal 5)"),
        Figure("old_client_1_reading", old1, "msg/s", old),
        Figure("old_client_1_reading_vs_broker", old1 / broker, "ratio", "of raw broker"),
        Figure("old_client_50_readings", old50 * 50, "readings/s", old),
        Figure("old_client_50_readings_vs_verify", old50 * 50 / verify, "ratio", "of verifies"),
        Figure("paho_vs_old_client_1_reading", msg1 / old1, "ratio", "the library's cost"),
        Figure("paho_vs_old_client_50_readings", msg50 / old50, "ratio", "the library's cost"),
        Figure("machine_load", os.getloadavg()[0], "load", load),
    ]
