"""Real-time events against real servers: uvicorn on a free port, Redis, PostgreSQL,
and real ``socketio.AsyncClient`` connections over WebSocket.

Absence is proven by order, not by waiting: every connection's messages arrive in
the order they were sent, so emitting the event a client must not see *before*
one it must see, then checking that the first thing it receives is the latter,
shows the former never came.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import socketio
import uvicorn
from cloud.tests.api_support import Api, Clock, bearer, test_settings
from fastapi import FastAPI

from gridclear.cloud.api.app import create_app
from gridclear.cloud.api.realtime import RealtimeServer
from gridclear.cloud.realtime import Event, EventPublisher, timeslot_room
from gridclear.cloud.settings import Settings
from gridclear.cloud.storage.migrations import migrate
from gridclear.devtools.net import free_port

CLI = str(Path(sys.executable).parent / "gridclear-cloud")
WAIT_S = 10.0


@dataclass
class Served:
    """An API app served by uvicorn in this process, and an HTTP client to it."""

    url: str
    app: FastAPI
    api: Api

    @property
    def events(self) -> EventPublisher:
        publisher: EventPublisher = self.app.state.events
        return publisher


@contextlib.asynccontextmanager
async def serving(settings: Settings, clock: Clock) -> AsyncIterator[Served]:
    app = create_app(settings, clock=clock)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            log_config=None,
            access_log=False,
            # A long-poll request in flight holds a graceful stop for up to the
            # ping interval (25 s); the tests need not wait for it.
            timeout_graceful_shutdown=1,
        )
    )
    task = asyncio.create_task(server.serve())
    async with asyncio.timeout(WAIT_S):
        while not server.started:
            if task.done():
                task.result()
                raise AssertionError("uvicorn stopped before it started")
            await asyncio.sleep(0.02)
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=url, timeout=WAIT_S) as http:
            assert settings.database_url is not None
            yield Served(url, app, Api(http, app, clock, settings, settings.database_url))
    finally:
        server.should_exit = True
        await task


@pytest.fixture(scope="module")
def migrated_db(database_url: str) -> str:
    migrate(database_url)
    return database_url


@pytest.fixture
def settings(migrated_db: str, redis_url: str, redis_prefix: str) -> Settings:
    return test_settings(migrated_db, redis_url, redis_prefix)


@pytest.fixture
async def served(settings: Settings) -> AsyncIterator[Served]:
    async with serving(settings, Clock()) as running:
        yield running


@dataclass
class Listener:
    """A connected Socket.IO client that queues every event it receives."""

    client: socketio.AsyncClient
    received: asyncio.Queue[tuple[str, Any]] = field(default_factory=asyncio.Queue)
    disconnected: asyncio.Event = field(default_factory=asyncio.Event)

    async def next(self) -> tuple[str, Any]:
        async with asyncio.timeout(WAIT_S):
            return await self.received.get()

    async def gone(self) -> None:
        """Return once the server has closed this connection."""
        async with asyncio.timeout(WAIT_S):
            await self.disconnected.wait()

    async def call(self, event: str, data: object) -> Any:
        return await self.client.call(event, data, timeout=WAIT_S)


EVENTS = [*(e.value for e in Event), "sentinel"]


@contextlib.asynccontextmanager
async def listening(
    url: str, token: str | None, *, transports: tuple[str, ...] = ("websocket",), **connect: Any
) -> AsyncIterator[Listener]:
    client = socketio.AsyncClient(reconnection=False)
    listener = Listener(client)
    for name in EVENTS:
        client.on(name, _queue_into(listener.received, name))

    async def on_disconnect(reason: object = None) -> None:
        listener.disconnected.set()

    client.on("disconnect", on_disconnect)
    auth = {"token": token} if token is not None else None
    await client.connect(
        url, auth=auth, transports=list(transports), wait_timeout=WAIT_S, **connect
    )
    try:
        yield listener
    finally:
        await client.disconnect()


def _queue_into(queue: asyncio.Queue[tuple[str, Any]], name: str) -> Any:
    async def handler(data: Any = None) -> None:
        await queue.put((name, data))

    return handler


async def refusal(url: str, **connect: Any) -> dict[str, Any]:
    """Connect and expect a refusal; returns what the server said (message, data)."""
    client = socketio.AsyncClient(reconnection=False)
    said: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()

    async def on_error(data: Any = None) -> None:
        if not said.done():
            said.set_result(data)

    client.on("connect_error", on_error)
    with pytest.raises(socketio.exceptions.ConnectionError):
        await client.connect(url, transports=["websocket"], wait_timeout=WAIT_S, **connect)
    async with asyncio.timeout(WAIT_S):
        answer = await said
    await client.disconnect()
    return answer


async def signed_in(api: Api, email: str) -> tuple[int, str]:
    data = await api.register(email)
    return int(data["user"]["id"]), str(data["accessToken"])


# ---------------------------------------------------------------- authentication


async def test_a_connect_without_a_valid_token_is_refused_with_its_code(served: Served) -> None:
    api = served.api
    _, token = await signed_in(api, "alice@example.org")

    nothing = await refusal(served.url)
    assert nothing["data"]["code"] == "AUTHENTICATION_REQUIRED"
    forged = await refusal(served.url, auth={"token": token[:-4] + "AAAA"})
    assert forged["data"]["code"] == "INVALID_TOKEN"
    garbage = await refusal(served.url, auth={"token": "not a token"})
    assert garbage["data"]["code"] == "INVALID_TOKEN"
    wrong_type = await refusal(served.url, auth={"token": 42})
    assert wrong_type["data"]["code"] == "AUTHENTICATION_REQUIRED"

    # The valid token works in the auth payload and in the Authorization header.
    async with listening(served.url, token) as by_payload:
        assert by_payload.client.connected
    async with listening(served.url, None, headers=bearer(token)) as by_header:
        assert by_header.client.connected

    logout = await api.client.post("/api/auth/logout", headers=bearer(token))
    assert logout.status_code == 200, logout.text
    revoked = await refusal(served.url, auth={"token": token})
    assert revoked["data"]["code"] == "INVALID_TOKEN"
    assert "revoked" in revoked["message"]

    # A token issued one lifetime ago (signatures check expiry against real time).
    api.clock.advance(-api.settings.access_token_ttl_s - 5)
    _, stale = await signed_in(api, "zed@example.org")
    api.clock.advance(api.settings.access_token_ttl_s + 5)
    expired = await refusal(served.url, auth={"token": stale})
    assert expired["data"]["code"] == "TOKEN_EXPIRED"

    metrics = (await api.client.get("/metrics")).text
    for reason, count in (
        ("AUTHENTICATION_REQUIRED", 2),
        ("INVALID_TOKEN", 3),
        ("TOKEN_EXPIRED", 1),
    ):
        line = f'gridclear_realtime_connections_refused_total{{reason="{reason}"}} {count}.0'
        assert line in metrics


async def test_logout_and_token_expiry_close_open_connections(served: Served) -> None:
    api = served.api
    _, token = await signed_in(api, "bob@example.org")
    _, other = await signed_in(api, "carol@example.org")
    _, later = await signed_in(api, "dave@example.org")
    server: RealtimeServer = served.app.state.realtime

    async with (
        listening(served.url, token) as bob,
        listening(served.url, other) as carol,
        listening(served.url, later) as dave,
    ):
        assert await server.sweep() == 0
        assert (await api.client.post("/api/auth/logout", headers=bearer(token))).is_success
        await bob.gone()  # at once: a logout has every instance recheck the user's sockets
        assert await server.sweep() == 0
        assert carol.client.connected
        assert dave.client.connected

        api.clock.advance(api.settings.access_token_ttl_s + 1)
        assert await server.sweep() == 2
        await carol.gone()
        await dave.gone()
    metrics = (await api.client.get("/metrics")).text
    assert 'gridclear_realtime_disconnects_total{reason="session_revoked"} 1.0' in metrics
    assert 'gridclear_realtime_disconnects_total{reason="token_expired"} 2.0' in metrics


# ---------------------------------------------------------------- rooms and users


async def test_clients_get_their_timeslot_rooms_events_only(served: Served) -> None:
    _, token_a = await signed_in(served.api, "erin@example.org")
    _, token_b = await signed_in(served.api, "frank@example.org")
    events = served.events
    async with listening(served.url, token_a) as one, listening(served.url, token_b) as two:
        joined = await one.call("join_timeslot", 1)
        assert joined == {"success": True, "data": {"room": "timeslot:1", "timeslotId": 1}}
        # The seed's apps send the id as a string or inside an object: both work.
        assert (await two.call("join_timeslot", {"timeslotId": "2"}))["success"] is True

        await events.emit("timeslot_update", {"id": 2, "state": "open"}, room=timeslot_room(2))
        await events.emit("bid_update", {"timeslotId": 1, "id": 10}, room=timeslot_room(1))
        await events.emit("supply_update", {"timeslotId": 1, "id": 11}, room="timeslot:1")
        assert await one.next() == ("bid_update", {"timeslotId": 1, "id": 10})
        assert await one.next() == ("supply_update", {"timeslotId": 1, "id": 11})
        assert await two.next() == ("timeslot_update", {"id": 2, "state": "open"})

        # Leaving the room stops its events; a broadcast still reaches everyone.
        left = await one.call("leave_timeslot", "1")
        assert left["success"] is True
        await events.emit("bid_update", {"timeslotId": 1, "id": 12}, room=timeslot_room(1))
        await events.emit("sentinel", {"n": 1})
        assert await one.next() == ("sentinel", {"n": 1})
        assert await two.next() == ("sentinel", {"n": 1})


async def test_long_polling_works_through_the_api_middleware(served: Served) -> None:
    """The fallback transport: plain HTTP requests through the API's middleware stack."""
    _, token = await signed_in(served.api, "mia@example.org")
    async with listening(served.url, token, transports=("polling",)) as client:
        assert client.client.transport() == "polling"
        assert (await client.call("join_timeslot", 3))["success"] is True
        await served.events.emit("timeslot_update", {"id": 3, "state": "closed"}, room="timeslot:3")
        assert await client.next() == ("timeslot_update", {"id": 3, "state": "closed"})
        # Closed by the server, the client hears it at once (its own close waits
        # for the pending long poll).
        server: RealtimeServer = served.app.state.realtime
        await server.sio.disconnect(client.client.get_sid("/"))
        await client.gone()


async def test_a_bad_join_is_refused_with_a_reason_and_changes_nothing(served: Served) -> None:
    _, token = await signed_in(served.api, "gina@example.org")
    async with listening(served.url, token) as client:
        for bad in (None, 0, -3, True, 1.5, "1e3", "x", [1], {"slot": 1}, 2**63):
            answer = await client.call("join_timeslot", bad)
            assert answer["success"] is False, bad
            assert answer["error"]["code"] == "VALIDATION_ERROR"
            assert answer["error"]["details"] == {"reason": "bad_timeslot"}
        for slot in range(1, 65):
            assert (await client.call("join_timeslot", slot))["success"] is True
        again = await client.call("join_timeslot", 64)
        assert again["success"] is True  # already in it: no new room
        too_many = await client.call("join_timeslot", 65)
        assert too_many["error"]["details"] == {"reason": "too_many_rooms"}
        # The connection still works after every refusal.
        await served.events.emit("timeslot_update", {"id": 65}, room=timeslot_room(65))
        await served.events.emit("timeslot_update", {"id": 64}, room=timeslot_room(64))
        assert await client.next() == ("timeslot_update", {"id": 64})
    metrics = (await served.api.client.get("/metrics")).text
    assert (
        'gridclear_realtime_client_errors_total{event="join_timeslot",reason="bad_timeslot"} 10.0'
        in metrics
    )


async def test_user_notifications_reach_that_users_connections_only(served: Served) -> None:
    alice, token_a = await signed_in(served.api, "hana@example.org")
    bob, token_b = await signed_in(served.api, "ivan@example.org")
    events = served.events
    async with (
        listening(served.url, token_a) as phone,
        listening(served.url, token_a) as laptop,
        listening(served.url, token_b) as other,
    ):
        await events.emit("user_notification", {"to": "bob"}, user_id=bob)
        await events.emit("user_notification", {"to": "alice"}, user_id=alice)
        assert await phone.next() == ("user_notification", {"to": "alice"})
        assert await laptop.next() == ("user_notification", {"to": "alice"})
        assert await other.next() == ("user_notification", {"to": "bob"})
        # A client cannot join another user's room: only timeslot rooms can be joined.
        sneaky = await other.call("join_timeslot", f"user:{alice}")
        assert sneaky["success"] is False
        await events.emit("user_notification", {"to": "alice", "n": 2}, user_id=alice)
        await events.emit("sentinel", {})
        assert await other.next() == ("sentinel", {})


# ---------------------------------------------------------------- across processes

_PUBLISH = textwrap.dedent(
    """
    import asyncio, sys
    from gridclear.cloud.realtime import EventPublisher

    async def main() -> None:
        url, prefix, room = sys.argv[1:4]
        async with EventPublisher.from_redis_url(url, key_prefix=prefix) as events:
            await events.emit("timeslot_update", {"id": 5, "state": "cleared"}, room=room)
            await events.emit("user_notification", {"fill": 7}, user_id=int(sys.argv[4]))
        failures = sum(
            m.samples[0].value for m in events.metrics.emit_failures.collect() if m.samples
        )
        print("failures", int(failures))

    asyncio.run(main())
    """
)


async def test_an_event_from_another_process_reaches_the_api_clients(
    served: Served, settings: Settings
) -> None:
    user_id, token = await signed_in(served.api, "jo@example.org")
    async with listening(served.url, token) as client:
        await client.call("join_timeslot", 5)
        assert settings.redis_url is not None
        done = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _PUBLISH,
            settings.redis_url,
            settings.redis_key_prefix,
            "timeslot:5",
            str(user_id),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        out, err = await done.communicate()
        assert done.returncode == 0, err.decode()
        assert out.decode().split() == ["failures", "0"]
        assert await client.next() == ("timeslot_update", {"id": 5, "state": "cleared"})
        assert await client.next() == ("user_notification", {"fill": 7})


@contextlib.contextmanager
def cli_server(settings: Settings) -> Iterator[str]:
    """``gridclear-cloud serve`` as a process with the same database, Redis and key."""
    assert settings.jwt_private_key is not None
    port = free_port()
    env = {
        **os.environ,
        "GRIDCLEAR_DATABASE_URL": str(settings.database_url),
        "GRIDCLEAR_REDIS_URL": str(settings.redis_url),
        "GRIDCLEAR_REDIS_KEY_PREFIX": settings.redis_key_prefix,
        "GRIDCLEAR_JWT_PRIVATE_KEY": settings.jwt_private_key.get_secret_value(),
        "GRIDCLEAR_SIWS_DOMAIN": settings.siws_domain,
        "GRIDCLEAR_LOG_LEVEL": "WARNING",
    }
    server = subprocess.Popen(
        [CLI, "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            _, stderr = server.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.communicate()
            raise
        assert b"Traceback" not in stderr, stderr.decode()


async def _until_ready(url: str) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=1) as http, asyncio.timeout(30):
        while True:
            with contextlib.suppress(httpx.TransportError):
                if (await http.get("/api/health/live")).status_code == 200:
                    return
            await asyncio.sleep(0.1)


async def test_two_api_processes_behind_one_redis_deliver_to_their_own_clients(
    served: Served, settings: Settings
) -> None:
    alice, token_a = await signed_in(served.api, "kim@example.org")
    bob, token_b = await signed_in(served.api, "lee@example.org")
    with cli_server(settings) as other_url:
        await _until_ready(other_url)
        async with (
            listening(served.url, token_a) as here,
            listening(other_url, token_b) as there,
            listening(other_url, token_a) as alice_there,
        ):
            for client in (here, there):
                assert (await client.call("join_timeslot", 9))["success"] is True
            # Emitted in this process: its own client and the other process's clients.
            await served.events.emit("timeslot_update", {"id": 9, "price": 120}, room="timeslot:9")
            await served.events.emit("user_notification", {"for": alice}, user_id=alice)
            assert await here.next() == ("timeslot_update", {"id": 9, "price": 120})
            assert await there.next() == ("timeslot_update", {"id": 9, "price": 120})
            assert await here.next() == ("user_notification", {"for": alice})
            assert await alice_there.next() == ("user_notification", {"for": alice})
            # A write-only publisher (the scheduler's path) reaches both instances.
            assert settings.redis_url is not None
            async with EventPublisher.from_redis_url(
                settings.redis_url, key_prefix=settings.redis_key_prefix
            ) as scheduler:
                await scheduler.emit("user_notification", {"for": bob}, user_id=bob)
                await scheduler.emit("sentinel", {"all": True})
            assert await there.next() == ("user_notification", {"for": bob})
            for client in (here, there, alice_there):
                assert await client.next() == ("sentinel", {"all": True})
            # A burst emitted at one moment travels through Redis as one message (a
            # batch); the other process delivers every event of it to its clients.
            assert (await there.call("join_timeslot", 11))["success"] is True
            await asyncio.gather(
                *(
                    served.events.emit("bid_update", {"id": n}, room="timeslot:11")
                    for n in range(20)
                )
            )
            burst = [await there.next() for _ in range(20)]
            assert sorted(data["id"] for _, data in burst) == list(range(20))
            assert {event for event, _ in burst} == {"bid_update"}
