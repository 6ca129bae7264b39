"""Typed settings of the ingest worker and the scheduler: the variables named in
``gridclear.cloud.env``, options over variables, production refusing missing or weak
values, and the commands stopping with the settings' message."""

from __future__ import annotations

import os
import subprocess
from datetime import UTC, datetime

import pytest
from cloud.tests.process_support import CLI

from gridclear.cloud import env
from gridclear.cloud.settings import IngestSettings, SchedulerSettings, SettingsError

_DB = "postgresql://gridclear:a-long-password@db/gridclear"
_MQTT = "mqtt://gridclear-cloud:a-long-password@broker:1883"


@pytest.fixture
def environ(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in list(os.environ):
        if name.startswith("GRIDCLEAR_"):
            monkeypatch.delenv(name)
    return monkeypatch


def test_ingest_settings_come_from_the_variables_and_options_win(
    environ: pytest.MonkeyPatch,
) -> None:
    environ.setenv(env.DATABASE_URL, _DB)
    environ.setenv(env.MQTT_URL, _MQTT)
    environ.setenv(env.LOG_FORMAT, "text")
    environ.setenv(env.LOG_LEVEL, "warning")
    settings = IngestSettings.load()
    assert settings.urls() == (_DB, _MQTT)
    assert (settings.log_format, settings.log_level) == ("text", "WARNING")
    other = "mqtts://gridclear-cloud:another-password@broker:8883"
    assert IngestSettings.load(mqtt_url=other).urls() == (_DB, other)


def test_ingest_settings_name_what_is_missing_or_wrong(environ: pytest.MonkeyPatch) -> None:
    with pytest.raises(SettingsError, match=f"set {env.DATABASE_URL} or --database-url"):
        IngestSettings.load(mqtt_url=_MQTT).urls()
    with pytest.raises(SettingsError, match=f"set {env.MQTT_URL} or --mqtt-url"):
        IngestSettings.load(database_url=_DB).urls()
    with pytest.raises(SettingsError, match=f"{env.MQTT_URL}: must be an mqtt:// or mqtts://"):
        IngestSettings.load(mqtt_url="http://broker")
    environ.setenv(env.LOG_LEVEL, "chatty")
    with pytest.raises(SettingsError, match=f"{env.LOG_LEVEL}: use one of DEBUG, INFO"):
        IngestSettings.load()


@pytest.mark.parametrize(
    ("values", "problem"),
    [
        ({env.MQTT_URL: _MQTT}, f"set {env.DATABASE_URL}"),
        ({env.DATABASE_URL: _DB}, f"set {env.MQTT_URL}"),
        (
            {env.DATABASE_URL: _DB, env.MQTT_URL: "mqtt://broker:1883"},
            "must name the cloud's broker user and password",
        ),
        (
            {env.DATABASE_URL: _DB, env.MQTT_URL: "mqtt://gridclear-cloud@broker:1883"},
            "must name the cloud's broker user and password",
        ),
    ],
)
def test_production_ingest_refuses_missing_or_weak_values(
    environ: pytest.MonkeyPatch, values: dict[str, str], problem: str
) -> None:
    environ.setenv(env.ENV, "production")
    for name, value in values.items():
        environ.setenv(name, value)
    with pytest.raises(SettingsError, match=f"refusing to run in production: .*{problem}"):
        IngestSettings.load()


def test_production_ingest_with_credentials_starts(environ: pytest.MonkeyPatch) -> None:
    environ.setenv(env.ENV, "production")
    environ.setenv(env.MQTT_URL, _MQTT)
    # The option supplies what the variable does not, and the check sees it.
    assert IngestSettings.load(database_url=_DB).urls() == (_DB, _MQTT)


def test_scheduler_settings_options_win_over_the_variables(environ: pytest.MonkeyPatch) -> None:
    environ.setenv(env.MARKET_SPEED, "60")
    environ.setenv(env.MARKET_EPOCH, "2026-05-04T06:00:00Z")
    environ.setenv(env.SCHEDULER_INTERVAL_S, "0.5")
    settings = SchedulerSettings.load()
    assert (settings.market_speed, settings.scheduler_interval_s) == (60, 0.5)
    assert settings.market_epoch == datetime(2026, 5, 4, 6, tzinfo=UTC)
    settings = SchedulerSettings.load(speed=120, epoch="2026-05-05T00:00:00+02:00", interval_s=2)
    assert (settings.market_speed, settings.scheduler_interval_s) == (120, 2)
    assert settings.market_epoch == datetime(2026, 5, 4, 22, tzinfo=UTC)
    assert settings.redis_key_prefix == "gridclear:"


def test_the_scheduler_clock_may_be_anchored_to_a_wall_clock_instant(
    environ: pytest.MonkeyPatch,
) -> None:
    environ.setenv(env.MARKET_EPOCH_AT, "2026-12-03T18:00:00Z")
    settings = SchedulerSettings.load(speed=60, epoch="2026-12-03T09:00:00Z")
    assert settings.market_epoch_at == datetime(2026, 12, 3, 18, tzinfo=UTC)
    settings = SchedulerSettings.load(
        speed=60, epoch="2026-12-03T09:00:00Z", epoch_at="2026-12-03T19:00:00+01:00"
    )
    assert settings.market_epoch_at == datetime(2026, 12, 3, 18, tzinfo=UTC)


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"epoch_at": "2026-05-04T06:00:00Z"}, "--epoch-at .* needs --epoch"),
        (
            {"epoch": "2026-05-04T06:00:00Z", "epoch_at": "2026-05-04T06:00:00"},
            "the epoch's wall-clock time needs a UTC offset",
        ),
        ({"speed": 0}, "speed must be above 0 and at most 100000"),
        ({"epoch": "2026-05-04T06:00:00"}, "the epoch needs a UTC offset"),
        ({"epoch": "tomorrow"}, f"{env.MARKET_EPOCH}: Input should be a valid datetime"),
        ({"interval_s": 0.001}, "the interval must be 0.01 to 3600 seconds"),
    ],
)
def test_scheduler_settings_refuse_bad_values(
    environ: pytest.MonkeyPatch, options: dict[str, object], problem: str
) -> None:
    with pytest.raises(SettingsError, match=problem):
        SchedulerSettings.load(**options)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("values", "problem"),
    [
        ({env.REDIS_URL: "redis://:pw@cache:6379/0"}, f"set {env.DATABASE_URL}"),
        ({env.DATABASE_URL: _DB}, f"set {env.REDIS_URL}"),
        (
            {env.DATABASE_URL: _DB, env.REDIS_URL: "redis://:pw@c/0", env.MARKET_SPEED: "60"},
            "the market clock must be real time",
        ),
        (
            {
                env.DATABASE_URL: _DB,
                env.REDIS_URL: "redis://:pw@c/0",
                env.MARKET_EPOCH: "2026-05-04T06:00:00Z",
            },
            "the market clock must be real time",
        ),
    ],
)
def test_production_scheduler_refuses_missing_or_weak_values(
    environ: pytest.MonkeyPatch, values: dict[str, str], problem: str
) -> None:
    environ.setenv(env.ENV, "production")
    for name, value in values.items():
        environ.setenv(name, value)
    with pytest.raises(SettingsError, match=f"refusing to run in production: .*{problem}"):
        SchedulerSettings.load()


def test_production_commands_stop_with_the_settings_message() -> None:
    base = {k: v for k, v in os.environ.items() if not k.startswith("GRIDCLEAR_")}
    production = {**base, env.ENV: "production", env.DATABASE_URL: _DB}
    ingest = subprocess.run(
        [CLI, "ingest", "--mqtt-url", "mqtt://broker:1883"],
        env=production,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert ingest.returncode != 0
    assert "gridclear-cloud ingest: refusing to run in production" in ingest.stderr
    assert "user and password" in ingest.stderr
    scheduler = subprocess.run(
        [CLI, "scheduler", "--speed", "60"],
        env={**production, env.REDIS_URL: "redis://:pw@cache:6379/0"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert scheduler.returncode == 2
    assert "gridclear-cloud scheduler: refusing to run in production" in scheduler.stderr
    assert "the market clock must be real time" in scheduler.stderr
