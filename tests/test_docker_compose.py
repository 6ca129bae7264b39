"""docker-compose.yml is what operators run; no engine runs here, so check its shape."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from pytest_gridclear import REPO_ROOT

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
    operator_made = {"./deploy/mosquitto/passwd", "./deploy/mosquitto/certs"}
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
