"""The outbox keeps every signed message, in one unbroken chain, until the broker has it."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gridclear.edge.clock import fixed_clock
from gridclear.edge.outbox import Outbox, OutboxError
from gridclear.edge.signing import Signer
from gridclear.shared.intervals import boundaries
from gridclear.shared.keys import DeviceKey
from gridclear.shared.protocol import ReadingsPayload, payload_digest, verify_readings
from gridclear.shared.readings import Quality, Reading

KEY = DeviceKey(bytes(range(1, 33)))
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z, a 15-minute boundary


def signer(device_id: str = "gw-1", *, synced: bool = True) -> Signer:
    return Signer(device_id=device_id, key=KEY, clock=fixed_clock(synced=synced), now_ms=lambda: T0)


def reading(meter: str, ts_ms: int, wh: int = 0) -> Reading:
    return Reading(meter=meter, ts_ms=ts_ms, import_wh=wh, export_wh=0, power_w=100)


def open_outbox(path: Path, *, max_bytes: int = 2**30, device_id: str = "gw-1") -> Outbox:
    return Outbox.open(path, signer=signer(device_id), max_bytes=max_bytes)


def _verified(token: str) -> tuple[ReadingsPayload, str]:
    message = verify_readings(token, key=KEY.public, expected_device_id="gw-1")
    return message.payload, message.digest


def _chain(outbox: Outbox) -> list[ReadingsPayload]:
    """Every message in the outbox, checked to form one hash chain with gapless seq."""
    payloads = []
    previous_digest = None
    for message in outbox.claim(after_seq=0, limit=10**9):
        payload, digest = _verified(message.token)
        assert payload.seq == message.seq
        if payloads:
            assert payload.seq == payloads[-1].seq + 1
            assert payload.prev == previous_digest
        payloads.append(payload)
        previous_digest = digest
    return payloads


def test_appends_form_a_gapless_hash_chain(tmp_path: Path) -> None:
    with open_outbox(tmp_path / "o.db") as outbox:
        seqs = [outbox.append([reading("m1", T0 + i * 1000, i)]) for i in range(5)]
        assert seqs == [[1], [2], [3], [4], [5]]
        chain = _chain(outbox)
    assert chain[0].prev is None
    assert [p.readings[0].import_wh for p in chain] == [0, 1, 2, 3, 4]


def test_sequence_and_chain_survive_a_restart(tmp_path: Path) -> None:
    with open_outbox(tmp_path / "o.db") as outbox:
        outbox.append([reading("m1", T0)])
        outbox.append([reading("m1", T0 + 1000)])
        (last,) = outbox.claim(after_seq=1, limit=1)
    with open_outbox(tmp_path / "o.db") as outbox:
        assert outbox.append([reading("m1", T0 + 2000)]) == [3]
        (third,) = outbox.claim(after_seq=2, limit=1)
    assert _verified(third.token)[0].prev == _verified(last.token)[1]


def test_acknowledged_messages_go_and_the_sequence_never_goes_back(tmp_path: Path) -> None:
    with open_outbox(tmp_path / "o.db") as outbox:
        for i in range(3):
            outbox.append([reading("m1", T0 + i)])
        outbox.ack([1, 2, 99])
        stats = outbox.stats()
        assert (stats.depth, stats.oldest_seq, stats.last_seq) == (1, 3, 3)
        outbox.ack([3])
        assert outbox.stats().bytes == 0
    with open_outbox(tmp_path / "o.db") as outbox:
        assert outbox.append([reading("m1", T0 + 9)]) == [4]


def test_claim_is_ordered_bounded_and_remembered(tmp_path: Path) -> None:
    with open_outbox(tmp_path / "o.db") as outbox:
        for i in range(10):
            outbox.append([reading("m1", T0 + i)])
        assert [m.seq for m in outbox.claim(after_seq=2, limit=3)] == [3, 4, 5]
        assert [m.seq for m in outbox.claim(after_seq=0, limit=9, upto_seq=2)] == [1, 2]
    with open_outbox(tmp_path / "o.db") as outbox:
        assert outbox.stats().published_seq == 5


def test_large_batch_is_split_into_several_messages(tmp_path: Path) -> None:
    with open_outbox(tmp_path / "o.db") as outbox:
        seqs = outbox.append([reading(f"m{i % 8}", T0 + i) for i in range(2500)])
        assert seqs == [1, 2, 3]
        assert sum(len(p.readings) for p in _chain(outbox)) == 2500


def test_outbox_of_another_device_is_refused(tmp_path: Path) -> None:
    open_outbox(tmp_path / "o.db").close()
    with pytest.raises(OutboxError, match="belongs to device 'gw-1'"):
        open_outbox(tmp_path / "o.db", device_id="gw-2")


def test_unsynced_clock_flags_every_reading(tmp_path: Path) -> None:
    with Outbox.open(tmp_path / "o.db", signer=signer(synced=False)) as outbox:
        outbox.append([reading("m1", T0)])
        (message,) = outbox.claim(after_seq=0, limit=1)
    payload, _ = _verified(message.token)
    assert not payload.clock.synced
    assert Quality.CLOCK_UNSYNCED in payload.readings[0].quality


def test_thinning_keeps_boundary_samples_and_rechains_only_the_unpublished_tail(
    tmp_path: Path,
) -> None:
    meters = ("m1", "m2")
    with open_outbox(tmp_path / "o.db") as outbox:
        # 40 minutes of one-second samples of two meters, one message per second.
        for second in range(40 * 60):
            ts = T0 + 500 + second * 1000
            outbox.append([reading(m, ts, wh=second) for m in meters])
        outbox.claim(after_seq=0, limit=10)  # the first 10 went out before the outage
        before = outbox.stats()
        published = [m.token for m in outbox.claim(after_seq=0, limit=10)]
        outbox.max_bytes = int(before.bytes / 0.9) - 1  # just over the high-water mark
        result = outbox.thin()
        assert result is not None
        after = outbox.stats()
        assert after.bytes <= 0.7 * outbox.max_bytes
        assert result.first_seq == 11
        assert after.thinned_total == result.readings_dropped > 0
        chain = _chain(outbox)
        unchanged = [m.token for m in outbox.claim(after_seq=0, limit=10)]

    # What may have reached the broker is untouched.
    assert unchanged == published
    assert chain[9].seq == 10
    assert [p.thinned for p in chain[:10]] == [0] * 10
    assert sum(p.thinned for p in chain) == result.readings_dropped
    assert after.last_seq == chain[-1].seq < before.last_seq

    kept = {(r.meter, r.ts_ms) for p in chain for r in p.readings}
    first, last = T0 + 500, T0 + 500 + (40 * 60 - 1) * 1000
    for meter in meters:
        for boundary in boundaries(first, last, result.step_ms):
            assert (meter, boundary - 500) in kept  # last sample before the boundary
            assert (meter, boundary + 500) in kept  # first sample after it
        assert (meter, last) in kept


def test_thinning_waits_while_the_publisher_holds_it(tmp_path: Path) -> None:
    with open_outbox(tmp_path / "o.db", max_bytes=1000) as outbox:
        for i in range(200):
            outbox.append([reading("m1", T0 + i * 1000, i)])
        outbox.hold_thinning()
        assert outbox.thin() is None
        outbox.allow_thinning()
        assert outbox.thin() is not None


_WRITER = textwrap.dedent(
    """
    from pathlib import Path
    from gridclear.edge.clock import fixed_clock
    from gridclear.edge.outbox import Outbox
    from gridclear.edge.signing import Signer
    from gridclear.shared.keys import DeviceKey
    from gridclear.shared.readings import Reading
    T0 = {t0}
    signer = Signer(device_id="gw-1", key=DeviceKey(bytes(range(1, 33))),
                    clock=fixed_clock(synced=True))
    outbox = Outbox.open(Path({path!r}), signer=signer)
    i = 0
    while True:
        seqs = outbox.append([Reading(meter="m1", ts_ms=T0 + i * 1000, import_wh=i)])
        print(seqs[0], flush=True)
        i += 1
    """
)


def test_kill_9_during_appends_loses_nothing_committed(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    code = _WRITER.format(t0=T0, path=str(path))
    with subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=os.environ
    ) as writer:
        assert writer.stdout is not None
        reported = 0
        for line in writer.stdout:
            reported = int(line)
            if reported >= 200:
                break
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait()
    with open_outbox(path) as outbox:
        chain = _chain(outbox)
        # Every append that returned is there, in one chain; the next one continues it.
        assert chain[-1].seq >= reported
        assert [p.seq for p in chain] == list(range(1, chain[-1].seq + 1))
        assert outbox.append([reading("m1", T0 - 1)]) == [chain[-1].seq + 1]
        (next_message,) = outbox.claim(after_seq=chain[-1].seq, limit=1)
    assert _verified(next_message.token)[0].prev == payload_digest(_raw_payload(chain[-1]))


def _raw_payload(payload: ReadingsPayload) -> bytes:
    from gridclear.shared.protocol import encode_payload

    return encode_payload(payload)


def test_a_corrupt_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(OutboxError, match="outbox"):
        open_outbox(path)
    assert path.read_bytes() == b"this is not a database" * 100
    assert sqlite3.sqlite_version
