"""``gridclear-cloud demo``: the whole system on one machine, until Ctrl-C.

Servers named by ``GRIDCLEAR_*_URL`` are used as they are; the others are
started as throwaway instances (see :mod:`gridclear.cloud.localservices`).
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from types import FrameType

from gridclear.cloud import env
from gridclear.cloud.localservices import LocalServices, ServiceStartError


def default_broker_policy() -> Path | None:
    """The checkout's ``deploy/mosquitto/conf.d``, found from the working directory."""
    configured = os.environ.get(env.BROKER_CONFIG)
    if configured:
        return Path(configured)
    for folder in (Path.cwd(), *Path.cwd().parents):
        candidate = folder / "deploy" / "mosquitto" / "conf.d"
        if candidate.is_dir():
            return candidate
    return None


def _stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def run_demo(*, run_dir: Path | None, broker_policy: Path | None) -> int:
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    external = {
        "postgres": os.environ.get(env.DATABASE_URL),
        "redis": os.environ.get(env.REDIS_URL),
        "mosquitto": os.environ.get(env.MQTT_URL),
    }
    print("gridclear demo: starting services ...", flush=True)
    try:
        with LocalServices.start(
            run_dir=run_dir,
            broker_policy=broker_policy or default_broker_policy(),
            postgres=external["postgres"] is None,
            redis=external["redis"] is None,
            mosquitto=external["mosquitto"] is None,
        ) as services:
            print("\nWhat runs where:")
            for service in services:
                print(f"  {service.describe()}")
            for name, url in external.items():
                if url is not None:
                    print(f"  {name:<10} {url:<45} (external, from the environment)")
            print(f"\nRun folder: {services.run_dir}")
            print("Press Ctrl-C to stop.", flush=True)
            while True:
                signal.pause()
    except KeyboardInterrupt:
        print("\ngridclear demo: stopped; every service shut down.", flush=True)
        return 0
    except ServiceStartError as error:
        print(f"gridclear demo: {error}", file=sys.stderr)
        return 1
