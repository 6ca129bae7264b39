"""Edge agent footprint: RSS and CPU per reading, 8 meters polled every second.

The real ``gridclear-edge run`` process (as systemd runs it) polls eight
simulated meters (``gridclear-metersim``, Modbus TCP, household profiles at
real-time speed), signs one message per second into its SQLite outbox and
publishes to a throwaway Mosquitto, while this process subscribes and counts
the readings that arrive. After a warm-up, the agent's CPU time (user + system,
from /proc) and resident memory are sampled over the measurement window.

Figures: peak RSS of the agent, and beside it the RSS of a bare Python
interpreter that imported nothing (the floor on this machine); CPU per reading
(ms) and as a share of one core; readings per second delivered. The goal on a
Raspberry Pi is under 60 MB RSS and under 5% of one core; this machine is not a
Pi, so read the CPU share as an order of magnitude.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import aiomqtt

from bench.harness import BenchContext, Figure
from gridclear.devtools.metersim import MetersimProcess

METERS = 8
BIN = Path(sys.executable).parent
TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _bare_python_rss_mb() -> float:
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(5)"]) as bare:
        time.sleep(1.0)
        rss = _rss_mb(bare.pid)
        bare.kill()
    return rss


async def _measure(
    pid: int, mqtt_url: str, topic: str, warmup_s: float, window_s: float
) -> dict[str, float]:
    host, port = mqtt_url.removeprefix("mqtt://").split(":")
    import json

    from gridclear.shared.jws import b64url_decode

    readings = 0
    counting = False
    async with aiomqtt.Client(host, int(port)) as client:
        await client.subscribe(topic, qos=1)

        async def count() -> None:
            nonlocal readings
            async for message in client.messages:
                if counting:
                    assert isinstance(message.payload, bytes)
                    body = json.loads(b64url_decode(message.payload.decode().split(".")[1]))
                    readings += len(body["readings"])

        task = asyncio.create_task(count())
        await asyncio.sleep(warmup_s)
        counting = True
        cpu0, t0 = _cpu_s(pid), time.monotonic()
        peak = 0.0
        while time.monotonic() - t0 < window_s:
            peak = max(peak, _rss_mb(pid))
            await asyncio.sleep(1.0)
        cpu1, t1 = _cpu_s(pid), time.monotonic()
        counting = False
        task.cancel()
    return {"cpu_s": cpu1 - cpu0, "wall_s": t1 - t0, "peak_rss_mb": peak, "readings": readings}


def run(ctx: BenchContext) -> list[Figure]:
    window_s = 20.0 if ctx.quick else 180.0
    warmup_s = 5.0 if ctx.quick else 15.0
    mqtt_url = ctx.mqtt_url
    work = ctx.run_dir / "edge-footprint"
    work.mkdir(parents=True, exist_ok=True)
    specs = [f"{unit}:sdm630:household" for unit in range(1, METERS + 1)]
    with MetersimProcess(meters=specs, speed=1, seed=11, workdir=work) as meters:
        key = work / "device.key"
        key.unlink(missing_ok=True)
        subprocess.run(
            [str(BIN / "gridclear-edge"), "keygen", "--key", str(key)],
            check=True,
            capture_output=True,
        )
        tables = "".join(
            f'[[meters]]\nname = "m{u}"\ntransport = "tcp"\nhost = "{meters.host}"\n'
            f'port = {meters.port}\nunit = {u}\nmodel = "sdm630"\npoll_interval_s = 1\n\n'
            for u in range(1, METERS + 1)
        )
        config = work / "edge.toml"
        (work / "outbox.db").unlink(missing_ok=True)
        config.write_text(
            'device_id = "bench-gw"\nkey_file = "device.key"\noutbox = "outbox.db"\n\n'
            f'[mqtt]\nurl = "{mqtt_url}"\n\n' + tables
        )
        with (
            (work / "edge.log").open("wb") as log,
            subprocess.Popen(
                [str(BIN / "gridclear-edge"), "run", "--config", str(config)],
                stdout=log,
                stderr=subprocess.STDOUT,
            ) as agent,
        ):
            try:
                result = asyncio.run(
                    _measure(
                        agent.pid,
                        mqtt_url,
                        "gridclear/v1/devices/bench-gw/readings",
                        warmup_s,
                        window_s,
                    )
                )
            finally:
                agent.terminate()
                agent.wait(timeout=60)
    bare = _bare_python_rss_mb()
    per_reading_ms = 1000 * result["cpu_s"] / max(result["readings"], 1)
    return [
        Figure(
            "agent peak RSS", result["peak_rss_mb"], "MB", f"{METERS} meters at 1 s; goal < 60 MB"
        ),
        Figure("bare Python RSS", bare, "MB", "the interpreter alone, same machine"),
        Figure("agent CPU", 100 * result["cpu_s"] / result["wall_s"], "% of one core", "goal < 5%"),
        Figure("CPU per reading", per_reading_ms, "ms", "poll + sign + commit + publish"),
        Figure(
            "readings delivered",
            result["readings"] / result["wall_s"],
            "readings/s",
            f"expected ~{METERS}",
        ),
    ]
