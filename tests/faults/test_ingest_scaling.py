"""Scaling ingest down: two worker processes share the stream, then one goes.

A worker stopped with SIGTERM leaves its group and hands its share back, so the other
stores every message without a gap within seconds. A worker killed with SIGKILL cannot:
the broker queues its share in its persistent session; the other worker reports the
absent member, and an operator's ``gridclear-cloud ingest --leave --client-id <id>``
(or the same worker starting again) stores what was queued.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from cloud.tests.api_support import migrated_db
from cloud.tests.ingest_support import RECENT_MS, Gateway, Publisher, count, register, wait_for

from gridclear.devtools.children import spawn_child
from gridclear.devtools.net import free_port

__all__ = ["migrated_db"]

CLI = str(Path(sys.executable).parent / "gridclear-cloud")
TOTAL = 600
HANDED_BACK_S = 10.0
"""How long after the last publish every message must be stored ("a few seconds")."""


class Worker:
    """``gridclear-cloud ingest`` as a child process."""

    def __init__(self, args: list[str], log: Path) -> None:
        self.metrics_port = free_port()
        self.log = log
        self.process: subprocess.Popen[bytes] = spawn_child(
            [CLI, "ingest", *args, "--metrics-port", str(self.metrics_port)],
            log_path=log,
            cwd=log.parent,
        )

    def text(self) -> str:
        return self.log.read_text() if self.log.exists() else ""

    def metric(self, name: str) -> float | None:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics") as r:
            for line in r.read().decode().splitlines():
                if line.startswith(name + " "):
                    return float(line.split()[1])
        return None

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(20)


class Group:
    def __init__(self, url: str, mqtt_url: str, prefix: str, logs: Path) -> None:
        self.url = url
        self.name = f"g{uuid.uuid4().hex[:8]}"
        self.common = [
            "--database-url", url, "--mqtt-url", mqtt_url, "--group", self.name,
            "--topic-prefix", prefix, "--interval-refresh-s", "0",
        ]  # fmt: skip
        self.logs = logs
        self.workers: list[Worker] = []

    def start(self, client_id: str, *extra: str) -> Worker:
        log = self.logs / f"{client_id.replace(':', '_')}-{len(self.workers)}.log"
        worker = Worker([*self.common, "--client-id", client_id, *extra], log)
        self.workers.append(worker)
        return worker


@pytest.fixture
def group(
    migrated_db: str, mqtt_url: str, mqtt_topic_prefix: str, server_dir: Path
) -> Iterator[Group]:
    g = Group(migrated_db, mqtt_url, mqtt_topic_prefix, server_dir)
    yield g
    for worker in g.workers:
        worker.stop()


_OF = " FROM raw_messages m JOIN devices d ON d.id = m.device_pk WHERE d.device_id = %s"


def _stored(url: str, gateway: Gateway) -> int:
    return count(url, "SELECT count(*)" + _OF, gateway.device_id)


def _both_subscribed(
    url: str, publisher: Publisher, gateway: Gateway, workers: list[Worker]
) -> None:
    wait_for(lambda: all("subscribed" in w.text() for w in workers), what="both workers subscribed")
    publisher.send(gateway, gateway.sign(signed_ms=RECENT_MS + 1000))
    wait_for(lambda: _stored(url, gateway) == 1, what="the first message")


def _stream(publisher: Publisher, gateway: Gateway, start: int, end: int) -> None:
    for i in range(start, end):
        publisher.send(gateway, gateway.sign(signed_ms=RECENT_MS + (i + 1) * 1000))


def _check_complete(url: str, gateway: Gateway, total: int, *, chain_ok_from: int) -> None:
    """Every message once, nothing refused, and the chain whole from ``chain_ok_from`` on.

    (While two workers share one gateway's stream, a message and its successor may be
    committed at the same moment by different workers, and the successor may keep the
    verdict ``gap``; from one worker on, every verdict is ``ok``.)
    """
    d = gateway.device_id
    assert count(url, "SELECT count(*)" + _OF, d) == total
    assert count(url, "SELECT count(DISTINCT m.seq)" + _OF + " AND m.seq <= %s", d, total) == total
    assert count(url, "SELECT count(*) FROM quarantine") == 0
    assert count(url, "SELECT count(*)" + _OF + " AND m.chain = 'broken'", d) == 0
    bad = " AND m.seq >= %s AND m.chain <> 'ok'"
    assert count(url, "SELECT count(*)" + _OF + bad, d, chain_ok_from) == 0


def test_a_worker_stopped_gracefully_hands_its_share_back(
    group: Group, mqtt_url: str, mqtt_topic_prefix: str
) -> None:
    gateway = Gateway(device_id=f"gw-{uuid.uuid4().hex[:8]}")
    register(group.url, gateway)
    publisher = Publisher(mqtt_url, mqtt_topic_prefix)
    try:
        stays = group.start(f"gridclear-cloud:stays-{gateway.device_id}")
        goes = group.start(f"gridclear-cloud:goes-{gateway.device_id}")
        _both_subscribed(group.url, publisher, gateway, [stays, goes])
        _stream(publisher, gateway, 1, TOTAL // 2)
        goes.process.send_signal(signal.SIGTERM)
        # While it leaves, and after, the stream goes on.
        _stream(publisher, gateway, TOTAL // 2, 3 * TOTAL // 4)
        assert goes.process.wait(40) == 0
        _stream(publisher, gateway, 3 * TOTAL // 4, TOTAL)
        published = time.monotonic()
        wait_for(
            lambda: _stored(group.url, gateway) == TOTAL,
            timeout_s=max(1.0, HANDED_BACK_S - (time.monotonic() - published)),
            what="every message stored by the remaining worker",
        )
        _check_complete(group.url, gateway, TOTAL, chain_ok_from=3 * TOTAL // 4 + 1)
        assert "left the group; the broker keeps nothing for this worker" in goes.text()
        assert stays.process.poll() is None
    finally:
        publisher.close()


def test_a_killed_workers_share_is_reported_and_handed_back_by_the_operator(
    group: Group, mqtt_url: str, mqtt_topic_prefix: str
) -> None:
    gateway = Gateway(device_id=f"gw-{uuid.uuid4().hex[:8]}")
    register(group.url, gateway)
    publisher = Publisher(mqtt_url, mqtt_topic_prefix)
    try:
        stays = group.start(f"gridclear-cloud:stays-{gateway.device_id}")
        killed_id = f"gridclear-cloud:killed-{gateway.device_id}"
        killed = group.start(killed_id)
        _both_subscribed(group.url, publisher, gateway, [stays, killed])
        _stream(publisher, gateway, 1, TOTAL // 3)
        killed.process.send_signal(signal.SIGKILL)
        killed.process.wait(20)
        # The broker sends the killed member's Will: the other worker reports it.
        wait_for(
            lambda: f"group member {killed_id} is away" in stays.text(),
            what="the warning about the absent member",
        )
        assert stays.metric("gridclear_ingest_group_members_absent") == 1
        _stream(publisher, gateway, TOTAL // 3, TOTAL)
        # Part of the stream waits in the killed worker's session...
        wait_for(
            lambda: stays.metric("gridclear_ingest_backlog") == 0,
            what="the remaining worker idle",
        )
        assert _stored(group.url, gateway) < TOTAL
        # ... until the operator hands it back (the worker's return would do it too).
        handed = time.monotonic()
        leave = group.start(killed_id, "--leave")
        assert leave.process.wait(60) == 0
        wait_for(
            lambda: _stored(group.url, gateway) == TOTAL,
            timeout_s=max(1.0, 30 - (time.monotonic() - handed)),
            what="every message stored",
        )
        _check_complete(group.url, gateway, TOTAL, chain_ok_from=TOTAL + 1)
        wait_for(
            lambda: stays.metric("gridclear_ingest_group_members_absent") == 0,
            what="the member gone from the absent ones",
        )
        assert "left the group; the broker keeps nothing for this worker" in leave.text()
    finally:
        publisher.close()
