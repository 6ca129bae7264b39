"""The gateway publishes over TLS with a username and password, as it does in production.

A real Mosquitto with a TLS listener and a password file (``mosquitto_passwd``), a
certificate authority made for the test, the real ``gridclear-edge run`` against the real
simulator. A wrong password or a broker the gateway's CA did not sign gets nothing
through, and the readings wait in the outbox; nothing crashes.
"""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiomqtt
import pytest

from gridclear.cloud.ingest.source import Delivery, MqttSource, MqttSourceOptions
from gridclear.devtools.localservices import BrokerTls, MosquittoServer
from gridclear.devtools.metersim import MetersimProcess
from gridclear.devtools.pki import throwaway_broker_tls
from gridclear.shared.protocol import decode_payload
from gridclear.shared.topics import readings_topic

BIN = Path(sys.executable).parent
GATEWAY_PASSWORD = "correct horse battery staple"


@dataclass(frozen=True)
class Pki:
    ca_file: Path
    tls: BrokerTls


def _make_pki(folder: Path, label: str) -> Pki:
    """A CA and a broker certificate for 127.0.0.1 signed by it."""
    tls = throwaway_broker_tls(folder, label=label)
    return Pki(ca_file=tls.ca_file, tls=tls)


@pytest.fixture
def tls_broker(server_dir: Path) -> Iterator[tuple[MosquittoServer, Pki]]:
    pki = _make_pki(server_dir / "pki", "broker")
    passwd = server_dir / "passwd"
    for user, password in (("gw-tls", GATEWAY_PASSWORD), ("cloud", "cloud-secret")):
        subprocess.run(
            [
                "mosquitto_passwd",
                "-b",
                *(["-c"] if not passwd.exists() else []),
                str(passwd),
                user,
                password,
            ],
            check=True,
            capture_output=True,
        )
    broker = MosquittoServer(
        run_dir=server_dir / "broker", policy_dir=None, tls=pki.tls, password_file=passwd
    )
    broker.start()
    try:
        yield broker, pki
    finally:
        broker.stop()


def _edge_config(
    folder: Path, meters: MetersimProcess, broker: MosquittoServer, *, ca_file: Path, password: str
) -> Path:
    subprocess.run(
        [str(BIN / "gridclear-edge"), "keygen", "--key", str(folder / "device.key")],
        check=True,
        capture_output=True,
    )
    config = folder / "edge.toml"
    config.write_text(
        'device_id = "gw-tls"\nkey_file = "device.key"\noutbox = "outbox.db"\n'
        "batch_interval_s = 0.5\n\n"
        f'[mqtt]\nurl = "mqtts://127.0.0.1:{broker.port}"\nca_file = "{ca_file}"\n'
        f'username = "gw-tls"\npassword = "{password}"\nreconnect_max_s = 1\n\n'
        f'[[meters]]\nname = "m1"\ntransport = "tcp"\nhost = "{meters.host}"\n'
        f'port = {meters.port}\nunit = 1\nmodel = "sdm630"\npoll_interval_s = 0.5\n'
    )
    return config


async def _received(broker: MosquittoServer, ca_file: Path, seconds: float) -> list[bytes]:
    """What a TLS subscriber (the cloud's account) receives on the gateway's topic."""
    context = ssl.create_default_context(cafile=ca_file)
    payloads: list[bytes] = []
    async with aiomqtt.Client(
        "127.0.0.1",
        broker.port,
        username="cloud",
        password="cloud-secret",
        tls_context=context,
    ) as client:
        await client.subscribe(readings_topic("gw-tls"), qos=1)
        try:
            async with asyncio.timeout(seconds):
                async for message in client.messages:
                    assert isinstance(message.payload, bytes)
                    payloads.append(message.payload)
                    if len(payloads) >= 3:
                        break
        except TimeoutError:
            pass
    return payloads


def _run_edge(config: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [str(BIN / "gridclear-edge"), "run", "--config", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def _outbox_depth(config: Path) -> int:
    status = subprocess.run(
        [str(BIN / "gridclear-edge"), "status", "--config", str(config), "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    depth: int = json.loads(status.stdout)["outbox"]["depth"]
    return depth


async def test_gateway_publishes_over_tls_with_its_password(
    tls_broker: tuple[MosquittoServer, Pki],
    metersim: Callable[..., MetersimProcess],
    tmp_path: Path,
) -> None:
    broker, pki = tls_broker
    meters = metersim(meters=["1:sdm630:flat:2000"], speed=0, seed=1)
    config = _edge_config(tmp_path, meters, broker, ca_file=pki.ca_file, password=GATEWAY_PASSWORD)
    agent = _run_edge(config, tmp_path / "edge.log")
    try:
        payloads = await _received(broker, pki.ca_file, 30)
    finally:
        agent.terminate()
        agent.wait(timeout=60)
    assert len(payloads) >= 3, (tmp_path / "edge.log").read_text()[-2000:]
    token = payloads[0].split(b".")
    assert len(token) == 3
    from joserfc import jws  # the independent JOSE implementation
    from joserfc.jwk import OKPKey

    key = OKPKey.import_key(json.loads((tmp_path / "device.key").read_text()))
    verified = jws.deserialize_compact(payloads[0], key, algorithms=["Ed25519"])
    payload = decode_payload(verified.payload, expected_device_id="gw-tls")
    assert payload.readings[0].power_w == 2000


@pytest.mark.parametrize("problem", ["wrong password", "broker signed by another CA"])
async def test_gateway_refused_by_the_broker_keeps_its_readings(
    problem: str,
    tls_broker: tuple[MosquittoServer, Pki],
    metersim: Callable[..., MetersimProcess],
    tmp_path: Path,
) -> None:
    broker, pki = tls_broker
    meters = metersim(meters=["1:sdm630:flat:2000"], speed=0, seed=1)
    ca_file = pki.ca_file
    password = GATEWAY_PASSWORD
    if problem == "wrong password":
        password = "not the password"
    else:
        ca_file = _make_pki(tmp_path / "other", "other").ca_file
    config = _edge_config(tmp_path, meters, broker, ca_file=ca_file, password=password)
    agent = _run_edge(config, tmp_path / "edge.log")
    try:
        payloads = await _received(broker, pki.ca_file, 4)
        assert agent.poll() is None, "the agent must keep running and retrying"
    finally:
        agent.terminate()
        code = agent.wait(timeout=60)
    assert payloads == []
    assert code == 0
    assert _outbox_depth(config) > 0  # signed, kept, waiting for a broker that takes them


def _ingest_client(
    broker: MosquittoServer, ca_file: Path, password: str, received: list[bytes]
) -> tuple[MqttSource, list[str]]:
    dropped: list[str] = []
    client = MqttSource(
        MqttSourceOptions(
            host="127.0.0.1",
            port=broker.port,
            client_id="gridclear-cloud:ingest-tls-test",
            filters=[readings_topic("gw-tls")],
            username="cloud",
            password=password,
            tls=ssl.create_default_context(cafile=ca_file),
        ),
        on_disconnect=dropped.append,
    )

    def deliver(delivery: Delivery) -> None:
        received.append(delivery.payload)
        client.acknowledge([delivery])

    client.start(deliver)
    return client, dropped


@pytest.mark.parametrize("password", ["cloud-secret", "not the password"])
async def test_the_ingest_client_subscribes_over_tls_with_its_password(
    password: str,
    tls_broker: tuple[MosquittoServer, Pki],
    metersim: Callable[..., MetersimProcess],
    tmp_path: Path,
) -> None:
    # The ingest worker's own MQTT client, on the TLS listener with the cloud's account.
    broker, pki = tls_broker
    received: list[bytes] = []
    client, dropped = _ingest_client(broker, pki.ca_file, password, received)
    meters = metersim(meters=["1:sdm630:flat:2000"], speed=0, seed=1)
    config = _edge_config(tmp_path, meters, broker, ca_file=pki.ca_file, password=GATEWAY_PASSWORD)
    agent = _run_edge(config, tmp_path / "edge.log")
    try:
        for _ in range(150):
            if len(received) >= 3:
                break
            await asyncio.sleep(0.1)
    finally:
        agent.terminate()
        agent.wait(timeout=60)
        subscribed = client.wait_ready(0)
        client.close(end_session=True)
    if password == "cloud-secret":
        assert subscribed
        assert len(received) >= 3
        middle = received[0].split(b".")[1]
        body = base64.urlsafe_b64decode(middle + b"=" * (-len(middle) % 4))
        assert decode_payload(body, expected_device_id="gw-tls").readings[0].power_w == 2000
    else:
        assert received == []
        assert not subscribed
        assert dropped, "the refused connection is reported"
