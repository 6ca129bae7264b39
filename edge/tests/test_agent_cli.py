"""The installer's commands: keygen, status, and the shipped example configuration."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from joserfc.jwk import OKPKey

from gridclear.edge.config import load_config
from gridclear.edge.outbox import Outbox
from gridclear.edge.signing import Signer
from gridclear.shared.keys import load_key_file
from gridclear.shared.readings import Reading

EDGE = str(Path(sys.executable).parent / "gridclear-edge")
EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "edge" / "edge.toml.example"


def _edge(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([EDGE, *args], capture_output=True, text=True, check=False)


def test_keygen_writes_a_private_key_and_prints_the_public_one(tmp_path: Path) -> None:
    key_file = tmp_path / "device.key"
    result = _edge("keygen", "--key", str(key_file))
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    assert key_file.stat().st_mode & 0o777 == 0o600
    key = load_key_file(key_file)
    assert printed["kid"] == key.kid
    assert printed["public_key"] == key.public.x
    assert OKPKey.import_key(printed["jwk"]).thumbprint() == key.kid

    again = _edge("keygen", "--key", str(key_file))
    assert again.returncode == 1
    assert "already exists" in again.stderr
    assert "--public" in again.stderr
    assert load_key_file(key_file) == key
    public = _edge("keygen", "--key", str(key_file), "--public")
    assert json.loads(public.stdout) == printed


def test_shipped_example_configuration_is_valid() -> None:
    config = load_config(EXAMPLE)
    assert config.device_id == "gw-1"
    assert config.mqtt.tls
    assert [m.name for m in config.meters] == ["main", "pv"]


def test_status_reports_the_outbox(tmp_path: Path) -> None:
    _edge("keygen", "--key", str(tmp_path / "device.key"))
    config = tmp_path / "edge.toml"
    config.write_text(
        'device_id = "gw-1"\nkey_file = "device.key"\noutbox = "outbox.db"\n'
        '[mqtt]\nurl = "mqtt://127.0.0.1:1"\n'
    )
    missing = _edge("status", "--config", str(config))
    assert missing.returncode == 1
    assert "no outbox" in missing.stderr

    signer = Signer(device_id="gw-1", key=load_key_file(tmp_path / "device.key"))
    with Outbox.open(tmp_path / "outbox.db", signer=signer) as outbox:
        outbox.append([Reading(meter="m1", ts_ms=1_767_225_600_000, import_wh=5)])
    report = json.loads(_edge("status", "--config", str(config), "--json").stdout)
    assert report["outbox"]["depth"] == 1
    assert report["outbox"]["oldest_unsent_ms"] == 1_767_225_600_000
    assert report["agent"] is None
    text = _edge("status", "--config", str(config)).stdout
    assert "1 message(s) waiting" in text
    assert "2026-01-01 00:00:00Z" in text


def test_run_refuses_a_bad_configuration_with_one_clear_message(tmp_path: Path) -> None:
    config = tmp_path / "edge.toml"
    config.write_text('device_id = "gw 1"\nkey_file = "k"\noutbox = "o"\n[mqtt]\nurl = "x"\n')
    result = _edge("run", "--config", str(config))
    assert result.returncode == 2
    assert "device_id" in result.stderr
    missing_key = tmp_path / "ok.toml"
    missing_key.write_text(
        'device_id = "gw-1"\nkey_file = "nokey"\noutbox = "o.db"\n[mqtt]\nurl = "mqtt://h"\n'
    )
    result = _edge("run", "--config", str(missing_key))
    assert result.returncode == 2
    assert "gridclear-edge keygen" in result.stderr


def test_run_refuses_a_simulated_clock_in_production(tmp_path: Path) -> None:
    _edge("keygen", "--key", str(tmp_path / "device.key"))
    config = tmp_path / "edge.toml"
    config.write_text(
        'device_id = "gw-1"\nkey_file = "device.key"\noutbox = "outbox.db"\n'
        '[mqtt]\nurl = "mqtt://127.0.0.1:1"\n'
        "[simulation]\nspeed = 60\nepoch = 2030-06-21T09:00:00Z\n"
    )
    result = _edge("run", "--config", str(config))
    assert result.returncode == 2
    assert "simulation: a simulated clock is for demos and tests only" in result.stderr
    assert "refused in production" in result.stderr
    assert not (tmp_path / "outbox.db").exists()  # refused before anything was opened
