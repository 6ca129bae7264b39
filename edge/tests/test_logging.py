"""The gateway writes the same JSON log line as every cloud process."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

from gridclear.edge._logging import configure_logging


@pytest.fixture
def restored_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    gridclear_level = logging.getLogger("gridclear").level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.getLogger("gridclear").setLevel(gridclear_level)


@pytest.mark.usefixtures("restored_logging")
def test_a_gateway_line_has_the_clouds_fields_and_no_escapes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("info")
    logging.getLogger("gridclear.edge.agent").info(
        "meter \x1b[31m%s\x1b[0m read", "m1", extra={"meter": "m1", "color_message": "x"}
    )
    logging.getLogger("pymodbus").info("a library's chatter stays out")
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1
    entry = json.loads(lines[0])
    assert set(entry) == {"time", "level", "logger", "message", "meter"}
    assert entry["level"] == "INFO"
    assert entry["logger"] == "gridclear.edge.agent"
    assert entry["message"] == "meter m1 read"
    assert entry["time"].endswith("+00:00")
