"""The environment variables gridclear's development tools read, named in one place.

The three server URLs are the names the cloud reads too (``gridclear.cloud.env``;
a test checks that they agree): a developer sets them once, for tests, the demo
and the cloud's commands alike. Nothing reads these at import time.
"""

from typing import Final

__all__ = [
    "BROKER_CONFIG",
    "DATABASE_URL",
    "MQTT_URL",
    "REDIS_URL",
    "RUN_DIR",
    "TEST_TIMESCALE",
    "TEST_TIMESCALE_URL",
]

DATABASE_URL: Final = "GRIDCLEAR_DATABASE_URL"
"""PostgreSQL URL of an existing server; when unset, a throwaway server is started."""

REDIS_URL: Final = "GRIDCLEAR_REDIS_URL"
"""Redis URL of an existing server; when unset, a throwaway server is started."""

MQTT_URL: Final = "GRIDCLEAR_MQTT_URL"
"""MQTT broker URL (mqtt:// or mqtts://); when unset, a throwaway Mosquitto is started."""

RUN_DIR: Final = "GRIDCLEAR_RUN_DIR"
"""Where throwaway servers keep their data and logs; a fresh temporary folder when unset."""

BROKER_CONFIG: Final = "GRIDCLEAR_BROKER_CONFIG"
"""The Mosquitto policy folder throwaway brokers include (default: deploy/mosquitto/conf.d)."""

TEST_TIMESCALE: Final = "GRIDCLEAR_TEST_TIMESCALE"
"""``off`` turns the tests of the TimescaleDB path off (they are skipped, and the run's
summary says so); unset or ``on``, they run, and fail when TimescaleDB cannot be had."""

TEST_TIMESCALE_URL: Final = "GRIDCLEAR_TEST_TIMESCALE_URL"
"""Superuser URL of an existing PostgreSQL with TimescaleDB preloaded (docker compose);
when unset, a throwaway one is started."""
