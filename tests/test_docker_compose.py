"""docker-compose.yml is what operators run; no engine runs here, so check its shape."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from gridclear.cloud.ingest.worker import check_client_id
from gridclear.devtools import REPO_ROOT
from gridclear.shared.topics import validate_device_id

CORE_SERVICES = ("timescaledb", "redis", "mosquitto")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
    return document


@pytest.mark.parametrize("name", CORE_SERVICES)
def test_core_service_has_a_healthcheck(compose: dict[str, Any], name: str) -> None:
    service = compose["services"][name]
    check = service["healthcheck"]["test"]
    assert check[0] in ("CMD", "CMD-SHELL")
    assert len(check) > 1
    assert service["restart"] == "unless-stopped"


@pytest.mark.parametrize("name", CORE_SERVICES)
def test_core_service_keeps_its_data_in_a_named_volume(compose: dict[str, Any], name: str) -> None:
    named = set(compose["volumes"])
    sources = [v.split(":", 1)[0] for v in compose["services"][name]["volumes"]]
    assert any(source in named for source in sources), f"{name} has no named volume"


def test_database_is_timescaledb(compose: dict[str, Any]) -> None:
    assert compose["services"]["timescaledb"]["image"].startswith("timescale/timescaledb:")


def test_broker_runs_the_policy_the_tests_run(compose: dict[str, Any]) -> None:
    mounts = compose["services"]["mosquitto"]["volumes"]
    assert "./deploy/mosquitto/conf.d:/mosquitto/config/conf.d:ro" in mounts
    config = (REPO_ROOT / "deploy/mosquitto/mosquitto.conf").read_text()
    assert "include_dir /mosquitto/config/conf.d" in config
    assert "allow_anonymous false" in config


def test_repository_files_it_mounts_exist(compose: dict[str, Any]) -> None:
    operator_made = {
        "./deploy/mosquitto/passwd",
        "./deploy/mosquitto/passwd-cloud",
        "./deploy/mosquitto/certs",
        "./deploy/emqx/users-gateways.csv",
        "./deploy/emqx/users-cloud.csv",
    }
    for service in compose["services"].values():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("./") and source not in operator_made:
                assert (REPO_ROOT / source).exists(), f"{source} is mounted but missing"


def test_no_secret_has_a_default(compose: dict[str, Any]) -> None:
    text = (REPO_ROOT / "docker-compose.yml").read_text()
    secrets = re.findall(r"\$\{(GRIDCLEAR_[A-Z_]*PASSWORD[A-Z_]*)([^}]*)\}", text)
    assert secrets, "expected the passwords to come from the environment"
    for name, rest in secrets:
        assert rest.startswith(":?"), f"{name} must be required (${{{name}:?...}}), not defaulted"
    example = (REPO_ROOT / "deploy/env.example").read_text()
    for name, _ in secrets:
        assert re.search(rf"^{name}=$", example, re.MULTILINE), f"{name} missing in env.example"


def test_published_ports_of_internal_services_stay_on_loopback(compose: dict[str, Any]) -> None:
    for name in ("timescaledb", "redis"):
        for port in compose["services"][name].get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} to the world"


CLOUD_SERVICES = ("migrate", "api", "ingest-1", "scheduler")


def test_the_cloud_runs_from_one_image_built_here(compose: dict[str, Any]) -> None:
    images = {compose["services"][name]["image"] for name in CLOUD_SERVICES}
    assert len(images) == 1
    build = compose["services"]["migrate"]["build"]
    assert (REPO_ROOT / build["context"] / build["dockerfile"]).is_file()
    dockerfile = (REPO_ROOT / build["dockerfile"]).read_text()
    assert "uv sync --frozen --no-dev --package gridclear-cloud" in dockerfile
    assert re.search(r"^USER gridclear$", dockerfile, re.MULTILINE), "the image runs as root"


def test_the_cloud_waits_for_its_schema_and_servers(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["migrate"]["depends_on"]["timescaledb"]["condition"] == "service_healthy"
    for name in ("api", "ingest-1", "scheduler"):
        assert services[name]["depends_on"]["migrate"]["condition"] == (
            "service_completed_successfully"
        )
        assert services[name]["restart"] == "unless-stopped"
        assert services[name]["environment"] == services["migrate"]["environment"]
    assert services["ingest-1"]["depends_on"]["mosquitto"]["condition"] == "service_healthy"
    for name in ("api", "scheduler"):
        assert services[name]["depends_on"]["redis"]["condition"] == "service_healthy"


def test_every_ingest_worker_has_its_own_client_id(compose: dict[str, Any]) -> None:
    workers = [s for name, s in compose["services"].items() if name.startswith("ingest")]
    ids = [s["command"][s["command"].index("--client-id") + 1] for s in workers]
    assert ids
    assert len(set(ids)) == len(ids)
    for client_id in ids:
        # Never an id a gateway could connect with (tests/test_broker_security.py).
        with pytest.raises(ValueError, match="must be 1-64 characters"):
            validate_device_id(client_id)
        assert check_client_id(client_id) == client_id


def test_the_cloud_reaches_the_servers_by_their_service_names(compose: dict[str, Any]) -> None:
    environment = compose["services"]["api"]["environment"]
    assert "@timescaledb:5432/" in environment["GRIDCLEAR_DATABASE_URL"]
    assert "@redis:6379/" in environment["GRIDCLEAR_REDIS_URL"]
    assert environment["GRIDCLEAR_MQTT_URL"].startswith("mqtt://gridclear-cloud:")
    # Mosquitto unless GRIDCLEAR_MQTT_HOST names EMQX (profile emqx).
    assert "@${GRIDCLEAR_MQTT_HOST:-mosquitto}:1883" in environment["GRIDCLEAR_MQTT_URL"]
    acl = (REPO_ROOT / "deploy/mosquitto/acl-cloud").read_text()
    assert "user gridclear-cloud" in acl
    assert environment["GRIDCLEAR_ENV"] == "production"
    assert compose["services"]["api"]["ports"] == ["127.0.0.1:8000:8000"]


def test_prometheus_and_grafana_watch_the_cloud(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in ("prometheus", "grafana"):
        assert services[name]["restart"] == "unless-stopped"
        assert services[name]["healthcheck"]["test"][0] in ("CMD", "CMD-SHELL")
        for port in services[name]["ports"]:
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} to the world"
    # Every long-running cloud process serves metrics for Prometheus to scrape.
    for name in ("ingest-1", "scheduler"):
        assert "--metrics-port" in services[name]["command"]
    assert {"prometheus-data", "grafana-data"} <= set(compose["volumes"])
    assert compose["secrets"]["metrics-token"]["file"] == "./deploy/secrets/metrics-token"


def test_the_clustered_broker_starts_only_with_its_profile(compose: dict[str, Any]) -> None:
    profiled = {n for n, s in compose["services"].items() if "profiles" in s}
    assert profiled == {"emqx"}
