"""The agent: meters → signed batches in the outbox → broker, until SIGTERM.

Three loops share one event loop: the meter pool calls :meth:`Agent._take` for
every sample (never blocking); every ``batch_interval_s`` the readings taken so
far become one signed message, committed to the outbox before anything is sent;
the publisher sends what the outbox holds. A slow outbox (an SD card flushing)
delays only the batch loop, never the polling: samples wait in memory for the
next commit.

On stop (SIGTERM, Ctrl-C) polling ends, the last readings are committed, and the
publisher gets ``drain_timeout_s`` to send what it can and publish ``offline``;
whatever is left stays in the outbox for the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import logging
import math
import os
import signal
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass, fields, is_dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, NoReturn, Protocol

from gridclear.edge.clock import simulated_time
from gridclear.edge.outbox import Outbox, OutboxError
from gridclear.edge.publisher import Publisher, PublisherSettings
from gridclear.edge.signing import Signer
from gridclear.edge.status import status_message
from gridclear.shared.errors import KeyFileError
from gridclear.shared.keys import load_key_file
from gridclear.shared.protocol import StatusMessage
from gridclear.shared.readings import Reading

__all__ = [
    "Agent",
    "AgentSettings",
    "ReadingSource",
    "publisher_settings",
    "run_agent",
    "time_source",
]

log = logging.getLogger("gridclear.edge.agent")

_LOCAL_STATUS_S = 5.0


class ReadingSource(Protocol):
    """Where readings come from: :class:`gridclear.edge.modbus.MeterPool` in production."""

    async def run(self, sink: Callable[[Reading], Awaitable[None] | None]) -> NoReturn: ...

    def status(self) -> Mapping[str, Any]:
        """Per-meter health (dataclasses with ``consecutive_errors``), by meter name."""
        ...


@dataclass(frozen=True)
class AgentSettings:
    batch_interval_s: float = 1.0
    drain_timeout_s: float = 20.0
    """On stop: how long to keep sending what is left before leaving it for next time."""
    thinning_check_s: float = 10.0


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class Agent:
    def __init__(
        self,
        *,
        signer: Signer,
        outbox: Outbox,
        source: ReadingSource,
        publisher: PublisherSettings,
        settings: AgentSettings | None = None,
    ) -> None:
        self.signer = signer
        self.outbox = outbox
        self.source = source
        self.settings = settings or AgentSettings()
        self.publisher = Publisher(publisher, outbox, status=self._status_message)
        self._pending: list[Reading] = []
        self.committed_readings = 0

    def _take(self, reading: Reading) -> None:
        self._pending.append(reading)

    def _meters_failing(self) -> list[str]:
        return [
            name
            for name, status in self.source.status().items()
            if getattr(status, "consecutive_errors", 0) > 0
        ]

    def _status_message(self, state: Literal["online", "offline"]) -> StatusMessage:
        return status_message(
            state,
            device_id=self.signer.device_id,
            kid=self.signer.key.kid,
            outbox=self.outbox,
            meters_failing=self._meters_failing(),
        )

    async def _commit(self) -> None:
        if not self._pending:
            return
        batch, self._pending = self._pending, []
        await asyncio.to_thread(self.outbox.append, batch)
        self.committed_readings += len(batch)
        self.publisher.notify()

    async def _batch_loop(self) -> NoReturn:
        while True:
            await asyncio.sleep(self.settings.batch_interval_s)
            await self._commit()

    async def _maintenance(self) -> NoReturn:
        next_thinning_check = 0.0
        loop = asyncio.get_running_loop()
        while True:
            await self._write_local_status()
            if loop.time() >= next_thinning_check:
                next_thinning_check = loop.time() + self.settings.thinning_check_s
                result = await asyncio.to_thread(self.outbox.thin)
                if result is not None:
                    log.warning(
                        "outbox near its size limit: thinned unsent high-resolution samples",
                        extra={"thinning": asdict(result)},
                    )
            await asyncio.sleep(_LOCAL_STATUS_S)

    async def _write_local_status(self) -> None:
        stats = self.publisher.stats
        meters = {name: _jsonable(status) for name, status in self.source.status().items()}
        await asyncio.to_thread(
            self.outbox.set_status,
            {
                "ts_ms": _now_ms(),
                "pid": os.getpid(),
                "connected": stats.connected,
                "connects": stats.connects,
                "acked": stats.acked,
                "last_ack_ms": stats.last_ack_ms,
                "last_error": stats.last_error,
                "drain_backlog": stats.drain_backlog,
                "meters": meters,
            },
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set, then stop gracefully (see the module docstring)."""
        publisher_stop = asyncio.Event()
        async with asyncio.TaskGroup() as group:
            polling = group.create_task(self.source.run(self._take), name="meters")
            batching = group.create_task(self._batch_loop(), name="batches")
            upkeep = group.create_task(self._maintenance(), name="maintenance")
            publishing = group.create_task(self.publisher.run(publisher_stop), name="mqtt")
            await stop.wait()
            log.info("stopping: polling ends, the outbox gets what was read")
            for task in (polling, batching, upkeep):
                task.cancel()
            await asyncio.gather(polling, batching, upkeep, return_exceptions=True)
            await self._commit()
            publisher_stop.set()
            try:
                async with asyncio.timeout(self.settings.drain_timeout_s):
                    await asyncio.shield(publishing)
            except TimeoutError:
                log.warning("the broker did not take everything in time; the rest stays kept")
                publishing.cancel()
            await self._write_local_status()
        depth = (await asyncio.to_thread(self.outbox.stats)).depth
        log.info("stopped", extra={"outbox_depth": depth})


def _jsonable(status: Any) -> Any:
    if is_dataclass(status) and not isinstance(status, type):
        # Field by field: asdict() deep-copies, and cannot copy a mappingproxy.
        return {f.name: _jsonable(getattr(status, f.name)) for f in fields(status)}
    if isinstance(status, Mapping):
        return {str(key): _jsonable(value) for key, value in status.items()}
    return status


def publisher_settings(config: Any) -> PublisherSettings:
    """PublisherSettings from the gateway's :class:`~gridclear.edge.config.Config`."""
    mqtt = config.mqtt
    return PublisherSettings(
        device_id=config.device_id,
        host=mqtt.host,
        port=mqtt.port,
        tls=mqtt.tls,
        ca_file=mqtt.ca_file,
        cert_file=mqtt.cert_file,
        key_file=mqtt.key_file,
        username=mqtt.username,
        password=mqtt.password.get_secret_value() if mqtt.password is not None else None,
        keepalive_s=mqtt.keepalive_s,
        max_inflight=mqtt.max_inflight,
        drain_rate=mqtt.drain_rate,
        drain_jitter_s=mqtt.drain_jitter_s,
        reconnect_max_s=mqtt.reconnect_max_s,
        status_interval_s=config.status_interval_s,
        topic_prefix=mqtt.topic_prefix,
    )


def time_source(config: Any) -> Callable[[], float]:
    """Seconds since the Unix epoch for sample and signing times: UTC, or simulated.

    ``config`` is the gateway's :class:`~gridclear.edge.config.Config`; its
    ``[simulation]`` table (development only) gives :func:`simulated_time`.
    """
    simulation = config.simulation
    if simulation is None:
        return time.time
    return simulated_time(
        speed=simulation.speed,
        epoch=simulation.epoch.timestamp(),
        epoch_at=None if simulation.epoch_at is None else simulation.epoch_at.timestamp(),
    )


def run_agent(config_path: Path) -> int:
    """``gridclear-edge run``: load everything, run until SIGTERM/SIGINT, return the exit code.

    A bad configuration, key file or outbox is one clear message on stderr and
    exit code 2 (systemd then does not restart in a loop: see the unit file).
    """
    from gridclear.edge.config import ConfigError, load_config
    from gridclear.edge.modbus import MeterPool

    try:
        config = load_config(config_path)
        key = load_key_file(config.key_file)
        now = time_source(config)
        signer = Signer(
            device_id=config.device_id, key=key, now_ms=lambda: math.floor(now() * 1000)
        )
        outbox = Outbox.open(
            config.outbox, signer=signer, max_bytes=int(config.outbox_max_mb * 2**20)
        )
    except (ConfigError, KeyFileError, OutboxError) as error:
        log.error("cannot start: %s", error, extra={"problem": str(error)})
        return 2

    # `kill -USR1 <pid>` prints every thread's stack to the log: diagnosis without a debugger.
    faulthandler.register(signal.SIGUSR1, all_threads=True)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        async with MeterPool(config.meters, clock=now) as pool:
            agent = Agent(
                signer=signer,
                outbox=outbox,
                source=pool,
                publisher=publisher_settings(config),
                settings=AgentSettings(batch_interval_s=config.batch_interval_s),
            )
            log.info(
                "started",
                extra={
                    "device_id": config.device_id,
                    "kid": key.kid,
                    "meters": len(config.meters),
                    "broker": f"{config.mqtt.host}:{config.mqtt.port}",
                    "last_seq": outbox.last_seq(),
                },
            )
            if config.simulation is not None:
                log.warning(
                    "simulated clock: readings are stamped %s, not real UTC",
                    datetime.fromtimestamp(now(), UTC).isoformat(timespec="seconds"),
                    extra={"simulation": config.simulation.model_dump(mode="json")},
                )
            await agent.run(stop)

    with outbox, contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
    return 0
