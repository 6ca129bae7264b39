"""One log format for every cloud process: JSON lines (or text) without terminal escapes."""

from __future__ import annotations

import json
import logging

import pytest

from gridclear.cloud.logs import JsonFormatter, TextFormatter, configure_logging


def _record(message: str, *args: object, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("uvicorn.error", logging.INFO, __file__, 1, message, args, None)
    record.__dict__.update(extra)
    return record


def test_json_lines_drop_uvicorns_color_message_and_every_escape() -> None:
    # What uvicorn logs at start-up, and what a client can put into a logged value.
    record = _record(
        "Started server process [%d]",
        42,
        color_message="Started server process [\x1b[36m%d\x1b[0m]",
        peer="10.0.0.1\x1b]0;owned\x07\x1b[2J",
    )
    line = JsonFormatter().format(record)
    entry = json.loads(line)
    assert entry["message"] == "Started server process [42]"
    assert "color_message" not in entry
    assert entry["peer"] == "10.0.0.1"
    assert "\\u001b" not in line
    assert set(entry) == {"time", "level", "logger", "message", "peer"}
    assert entry["time"].endswith("+00:00")


def test_text_lines_carry_no_escapes_either() -> None:
    text = TextFormatter().format(_record("red \x1b[31m%s\x1b[0m", "alert"))
    assert text.endswith("INFO uvicorn.error: red alert")


def test_configure_logging_honours_the_format_and_refuses_unknown_levels(
    capsys: pytest.CaptureFixture[str],
) -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        configure_logging(level="warning", fmt="json")
        assert root.level == logging.WARNING
        logging.getLogger("gridclear.test").warning("one %s", "line")
        assert json.loads(capsys.readouterr().err)["message"] == "one line"
        with pytest.raises(ValueError, match="unknown log level 'chatty'"):
            configure_logging(level="chatty")
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
