"""Enrolment on the gateway: the endpoint, the refusals that protect the token, the key file,
and clear messages when the cloud cannot be reached. (The round trip with the real cloud
API is tests/e2e/test_ingest_enrol.py.)"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from gridclear.edge.cli import main
from gridclear.edge.enrol import EnrolError, enrol, enrol_url


def test_the_endpoint_is_derived_from_the_cloud_address() -> None:
    assert enrol_url("https://cloud.example.org") == "https://cloud.example.org/api/devices/enroll"
    assert (
        enrol_url("https://c.example.org:8443/") == "https://c.example.org:8443/api/devices/enroll"
    )
    assert enrol_url("http://127.0.0.1:8000") == "http://127.0.0.1:8000/api/devices/enroll"
    assert (
        enrol_url("https://c.example.org/api/devices/enroll")
        == "https://c.example.org/api/devices/enroll"
    )


def test_the_token_is_never_sent_in_clear_to_a_remote_host() -> None:
    with pytest.raises(EnrolError, match="plain http"):
        enrol_url("http://cloud.example.org")
    assert enrol_url("http://cloud.example.org", allow_http=True).startswith("http://")
    with pytest.raises(EnrolError, match="https://"):
        enrol_url("ftp://cloud.example.org")


def _config(tmp_path: Path) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(
        'device_id = "gw-enrol"\nkey_file = "device.key"\noutbox = "outbox.db"\n'
        '[mqtt]\nurl = "mqtt://127.0.0.1:1883"\n'
    )
    return path


def test_an_unreachable_cloud_is_a_clear_error_and_the_key_is_kept(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = _config(tmp_path)
    with pytest.raises(EnrolError, match="cannot reach"):
        enrol(url=f"http://127.0.0.1:{port}", token="gce_x", config_path=config, timeout_s=5)
    key = tmp_path / "device.key"
    assert key.exists()
    assert key.stat().st_mode & 0o777 == 0o600


def test_the_command_reports_a_bad_configuration_with_exit_code_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('device_id = "gw"\n')
    code = main(["enrol", "--url", "https://c.example.org", "--token", "t", "--config", str(bad)])
    assert code == 1
    assert "gridclear-edge enrol:" in capsys.readouterr().err
