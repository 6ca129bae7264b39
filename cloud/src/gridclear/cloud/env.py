"""Every environment variable gridclear's cloud side reads, named in one place.

Nothing reads these at import time: settings objects are built from them once,
at start-up, and passed in.
"""

from typing import Final

DATABASE_URL: Final = "GRIDCLEAR_DATABASE_URL"
"""PostgreSQL URL of an existing server; when unset, a throwaway server is started."""

REDIS_URL: Final = "GRIDCLEAR_REDIS_URL"
"""Redis URL of an existing server; when unset, a throwaway server is started."""

MQTT_URL: Final = "GRIDCLEAR_MQTT_URL"
"""MQTT broker URL (mqtt:// or mqtts://); when unset, a throwaway Mosquitto is started."""

RUN_DIR: Final = "GRIDCLEAR_RUN_DIR"
"""Where throwaway servers keep their data and logs; a fresh temporary folder when unset."""

BROKER_CONFIG: Final = "GRIDCLEAR_BROKER_CONFIG"
"""The Mosquitto policy file throwaway brokers include (default: deploy/mosquitto/conf.d)."""

TEST_TIMESCALE_URL: Final = "GRIDCLEAR_TEST_TIMESCALE_URL"
"""A TimescaleDB server for the tests that cover the hypertable path (docker compose)."""
