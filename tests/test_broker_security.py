"""The production broker configuration against gateways that hold valid credentials.

A real Mosquitto runs ``deploy/mosquitto/mosquitto.conf`` as shipped, with only its
paths and ports changed: its TLS listener for gateways (a throwaway CA and server
certificate), the cloud's listener, password files made with ``mosquitto_passwd``, the
ACLs and the ``conf.d`` policy from the checkout. A real ingest worker subscribes through
the cloud's account with the client id ``docker-compose.yml`` gives it.

What a gateway must not be able to do with its own password:

- take over the ingest worker's session by connecting with the worker's client id (the
  broker would route the shared subscription's readings to the gateway, refuse them under
  the gateway's ACL and drop them, after the publisher got its PUBACK);
- knock another gateway off the broker by connecting with that gateway's client id;
- log in on the cloud's listener; nor may the cloud's account log in where gateways do.
"""

from __future__ import annotations

import re
import shutil
import ssl
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import paho.mqtt.client as mqtt
import pytest
import yaml
from cloud.tests.ingest_support import Gateway, count, register, running_worker, wait_for
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from gridclear.cloud.ingest.worker import CLOUD_CLIENT_ID_PREFIX, default_client_id
from gridclear.cloud.storage.migrations import migrate
from gridclear.devtools import REPO_ROOT
from gridclear.devtools.localservices import BrokerTls, MosquittoServer
from gridclear.devtools.net import free_port
from gridclear.devtools.pki import throwaway_broker_tls
from gridclear.shared.topics import readings_topic, validate_device_id

BIN = Path(sys.executable).parent
DEPLOY = REPO_ROOT / "deploy" / "mosquitto"
CLOUD_USER = "gridclear-cloud"
CLOUD_PASSWORD = "cloud-secret"
HEALTH_PASSWORD = "health-secret"
TIMEOUT_S = 15.0
"""A bound on waits for the broker's answers, not a claim about speed."""


def _compose_client_id() -> str:
    """The client id docker-compose.yml gives the ingest worker: what an attacker would try."""
    compose: dict[str, Any] = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
    command: list[str] = compose["services"]["ingest-1"]["command"]
    return command[command.index("--client-id") + 1]


# ------------------------------------------------------------ the production broker


def _password_file(path: Path, accounts: Mapping[str, str]) -> Path:
    for user, password in accounts.items():
        create = ["-c"] if not path.exists() else []
        subprocess.run(
            ["mosquitto_passwd", "-b", *create, str(path), user, password],
            check=True,
            capture_output=True,
        )
    return path


class ProductionBroker(MosquittoServer):
    """``deploy/mosquitto/mosquitto.conf`` as shipped, on loopback ports and in a folder.

    The compose file mounts the operator's files under ``/mosquitto/``; here the same
    layout lives under this broker's folder, and the two listeners (1883 for the cloud,
    8883 for gateways) move to free loopback ports. Nothing else changes.
    """

    def __init__(self, *, run_dir: Path, tls: BrokerTls, passwords: Mapping[str, Path]) -> None:
        super().__init__(
            run_dir=run_dir, policy_dir=None, tls=tls, password_file=passwords["passwd"]
        )
        self.passwords = passwords
        self.cloud_port = free_port()
        self.config_path = self.dir / "config" / "mosquitto.conf"

    @property
    def device_port(self) -> int:
        return self.port

    def _copy(self, source: Path, target: Path) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        self._chown(target.parent)
        shutil.copyfile(source, target)
        target.chmod(0o600)
        self._chown(target)

    def _prepare(self) -> None:
        root = self.dir
        # Every file the compose file mounts from deploy/mosquitto, and the operator's.
        for source in DEPLOY.glob("acl*"):
            self._copy(source, root / "config" / source.name)
        for policy in (DEPLOY / "conf.d").glob("*.conf"):
            self._copy(policy, root / "config" / "conf.d" / policy.name)
        for name, source in self.passwords.items():
            self._copy(source, root / "config" / name)
        assert self.tls is not None
        for name, source in (
            ("ca.crt", self.tls.ca_file),
            ("server.crt", self.tls.cert_file),
            ("server.key", self.tls.key_file),
        ):
            self._copy(source, root / "certs" / name)
        (root / "data").mkdir(exist_ok=True)
        self._chown(root / "data")

        text = (DEPLOY / "mosquitto.conf").read_text().replace("/mosquitto/", f"{root}/")
        ports = {1883: self.cloud_port, 8883: self.device_port}
        seen: list[int] = []

        def listener(match: re.Match[str]) -> str:
            seen.append(int(match[1]))
            return f"listener {ports[int(match[1])]} 127.0.0.1"

        text = re.sub(r"^listener (\d+) 0\.0\.0\.0$", listener, text, flags=re.MULTILINE)
        assert sorted(seen) == sorted(ports), f"expected listeners {sorted(ports)}, found {seen}"
        self.config_path.write_text(text)


@dataclass
class Fleet:
    """The running broker and the gateways that hold accounts on it."""

    broker: ProductionBroker
    gw_a: Gateway
    gw_b: Gateway
    passwords: dict[str, str]
    ca_file: Path

    @property
    def cloud_url(self) -> str:
        return f"mqtt://{CLOUD_USER}:{CLOUD_PASSWORD}@127.0.0.1:{self.broker.cloud_port}"


@pytest.fixture(scope="module")
def migrated(database_url: str) -> str:
    migrate(database_url)
    return database_url


@pytest.fixture
def fleet(server_dir: Path, migrated: str) -> Iterator[Fleet]:
    gw_a = Gateway(device_id=f"gw-a-{uuid.uuid4().hex[:8]}")
    gw_b = Gateway(device_id=f"gw-b-{uuid.uuid4().hex[:8]}")
    for gateway in (gw_a, gw_b):
        register(migrated, gateway)
    passwords = {gw_a.device_id: "password of a", gw_b.device_id: "password of b"}
    secrets = server_dir / "secrets"
    secrets.mkdir()
    # As docs/OPERATIONS.md has the operator make them: gateways in one file, the
    # cloud's service accounts in the other.
    files = {
        "passwd": _password_file(secrets / "passwd", passwords),
        "passwd-cloud": _password_file(
            secrets / "passwd-cloud", {CLOUD_USER: CLOUD_PASSWORD, "healthcheck": HEALTH_PASSWORD}
        ),
    }
    tls = throwaway_broker_tls(server_dir / "pki")
    broker = ProductionBroker(run_dir=server_dir, tls=tls, passwords=files)
    broker.start()
    try:
        yield Fleet(broker=broker, gw_a=gw_a, gw_b=gw_b, passwords=passwords, ca_file=tls.ca_file)
    finally:
        broker.stop()


# ------------------------------------------------------------ MQTT clients


@dataclass
class Connection:
    """One paho client connection and what the broker told it."""

    client: mqtt.Client
    connected: threading.Event = field(default_factory=threading.Event)
    reason: ReasonCode | None = None
    session_present: bool | None = None
    received: list[str] = field(default_factory=list)
    disconnects: int = 0

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    @property
    def accepted(self) -> bool:
        return self.reason is not None and not self.reason.is_failure

    def publish(self, topic: str, body: str) -> bool:
        """QoS 1; True once the broker acknowledged it on this client."""
        info = self.client.publish(topic, body, qos=1)
        try:
            info.wait_for_publish(TIMEOUT_S)
        except RuntimeError:  # not connected any more
            return False
        return info.is_published()


def _connect(
    fleet: Fleet,
    *,
    username: str,
    password: str,
    client_id: str,
    cloud_listener: bool = False,
    resume_session: bool = False,
) -> Connection:
    """Connect as a gateway would (TLS, MQTT 5) and wait for the CONNACK.

    ``resume_session``: clean start off and a long session expiry, as an ingest worker
    connects, to take over whatever session the broker keeps under ``client_id``.
    """
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=MQTTProtocolVersion.MQTTv5,
    )
    connection = Connection(client)
    client.username_pw_set(username, password)
    if not cloud_listener:
        client.tls_set_context(ssl.create_default_context(cafile=fleet.ca_file))

    def on_connect(
        _c: mqtt.Client, _u: object, flags: mqtt.ConnectFlags, reason: ReasonCode, _p: object
    ) -> None:
        if connection.reason is None:
            connection.reason = reason
            connection.session_present = flags.session_present
            connection.connected.set()

    def on_message(_c: mqtt.Client, _u: object, message: mqtt.MQTTMessage) -> None:
        connection.received.append(message.topic)

    def on_disconnect(*_: object) -> None:
        connection.disconnects += 1
        connection.connected.set()  # a refused CONNECT ends here too

    client.on_connect = on_connect
    client.on_message = on_message
    client.on_disconnect = on_disconnect
    properties = Properties(PacketTypes.CONNECT)
    properties.SessionExpiryInterval = 3600 if resume_session else 0
    port = fleet.broker.cloud_port if cloud_listener else fleet.broker.device_port
    client.connect(
        "127.0.0.1", port, clean_start=not resume_session, properties=properties, keepalive=30
    )
    client.loop_start()
    if not connection.connected.wait(TIMEOUT_S):
        connection.__exit__(None, None, None)
        raise AssertionError(f"no answer from the broker to {username} ({client_id})")
    return connection


def _as_gateway(fleet: Fleet, gateway: Gateway, **options: Any) -> Connection:
    return _connect(
        fleet,
        username=gateway.device_id,
        password=fleet.passwords[gateway.device_id],
        client_id=options.pop("client_id", gateway.device_id),
        **options,
    )


def _stored(url: str, device_id: str) -> int:
    return count(
        url,
        "SELECT count(*) FROM readings r JOIN devices d ON d.id = r.device_pk"
        " WHERE d.device_id = %s",
        device_id,
    )


# ------------------------------------------------------------ the tests


def test_a_gateway_cannot_take_over_the_ingest_workers_session(
    fleet: Fleet, migrated: str, caplog: pytest.LogCaptureFixture
) -> None:
    worker_id = _compose_client_id()
    rounds, per_round = 10, 30
    hijacks: list[Connection] = []
    with (
        running_worker(migrated, fleet.cloud_url, "", client_id=worker_id),
        _as_gateway(fleet, fleet.gw_b) as gw_b,
    ):
        assert gw_b.accepted, gw_b.reason
        for _ in range(rounds):
            # gw-a, with its own valid password, asks for the worker's session back ...
            with _as_gateway(fleet, fleet.gw_a, client_id=worker_id, resume_session=True) as gw_a:
                hijacks.append(gw_a)
                # ... while gw-b publishes; the broker acknowledges each reading to gw-b.
                for _ in range(per_round):
                    token = fleet.gw_b.sign().token
                    acknowledged = gw_b.publish(readings_topic(fleet.gw_b.device_id), token)
                    assert acknowledged, "gw-b lost its connection"
        total = rounds * per_round
        wait_for(
            lambda: _stored(migrated, fleet.gw_b.device_id) == total,
            timeout_s=30,
            what=f"all {total} acknowledged readings stored",
        )
        # The worker was never pushed off the broker (it logs every lost connection).
        lost = [r.getMessage() for r in caplog.records if "disconnected from" in r.getMessage()]
        assert lost == []
        assert gw_b.disconnects == 0
    # gw-a never held the worker's session: it found none waiting under that id and
    # never received a reading.
    assert hijacks[0].session_present is False
    assert [c.received for c in hijacks] == [[]] * rounds


def test_a_gateway_cannot_knock_another_off_with_its_client_id(fleet: Fleet) -> None:
    topic = readings_topic(fleet.gw_b.device_id)
    with _as_gateway(fleet, fleet.gw_b) as gw_b:
        assert gw_b.accepted, gw_b.reason
        for _ in range(5):
            with _as_gateway(fleet, fleet.gw_a, client_id=fleet.gw_b.device_id) as gw_a:
                assert gw_a.accepted, gw_a.reason
                # gw-a's CONNACK came after the broker dealt with the client id; gw-b's
                # connection must still be the one it had.
                acknowledged = gw_b.publish(topic, fleet.gw_b.sign().token)
                assert gw_b.disconnects == 0, "gw-a's connection knocked gw-b off"
                assert acknowledged


def test_a_gateway_cannot_log_in_on_the_clouds_listener(fleet: Fleet) -> None:
    with _as_gateway(fleet, fleet.gw_a, cloud_listener=True) as gw_a:
        assert gw_a.reason is not None
        assert gw_a.reason.is_failure, "a gateway's password opened the cloud's listener"


@pytest.mark.parametrize(
    ("user", "password"), [(CLOUD_USER, CLOUD_PASSWORD), ("healthcheck", HEALTH_PASSWORD)]
)
def test_the_clouds_accounts_are_refused_where_gateways_connect(
    fleet: Fleet, user: str, password: str
) -> None:
    # Even with the right password: the gateways' listener knows only gateways, so the
    # cloud's accounts are no use from the devices' side of the network.
    with _connect(fleet, username=user, password=password, client_id=f"x{user}") as client:
        assert client.reason is not None
        assert client.reason.is_failure, f"{user} logged in on the gateways' listener"


def test_the_health_check_logs_in_on_the_clouds_listener(fleet: Fleet) -> None:
    # The other side of the split: the cloud's accounts work where they belong (the
    # ingest worker's own login is in the first test).
    with _connect(
        fleet,
        username="healthcheck",
        password=HEALTH_PASSWORD,
        client_id="gridclear-cloud:healthcheck",
        cloud_listener=True,
    ) as health:
        assert health.accepted, health.reason


@pytest.mark.parametrize("client_id", ["ingest-1", "gw-a", "gridclear-ingest-host"])
def test_the_ingest_command_refuses_a_client_id_a_gateway_could_have(client_id: str) -> None:
    result = subprocess.run(
        [str(BIN / "gridclear-cloud"), "ingest", "--client-id", client_id],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "could be a gateway's device id" in result.stderr
    assert f"{CLOUD_CLIENT_ID_PREFIX}ingest-1" in result.stderr


def test_the_default_client_id_is_the_clouds() -> None:
    client_id = default_client_id()
    assert client_id.startswith(CLOUD_CLIENT_ID_PREFIX)
    with pytest.raises(ValueError, match="must be 1-64 characters"):
        validate_device_id(client_id)
