"""docs/MARKET.md's worked example is what the engine computes, to the Wh and base unit."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from gridclear.cloud.market.book_json import parse_book, result_to_json
from gridclear.cloud.market.clearing import clear
from gridclear.devtools import REPO_ROOT

MARKET_MD = REPO_ROOT / "docs" / "MARKET.md"


def _block(name: str) -> str:
    text = MARKET_MD.read_text(encoding="utf-8")
    found = re.search(rf"<!-- worked-example:{name} -->\n```json\n(.*?)\n```", text, re.S)
    assert found, f"docs/MARKET.md has no worked-example:{name} JSON block"
    return found.group(1)


def _documented_result() -> dict[str, Any]:
    result: dict[str, Any] = json.loads(_block("result"))
    return result


def test_the_worked_example_clears_as_documented() -> None:
    parsed = parse_book(_block("book"))
    result = clear(parsed.book, price_floor=parsed.price_floor, price_cap=parsed.price_cap)
    computed = result_to_json(
        parsed.book, result, price_floor=parsed.price_floor, price_cap=parsed.price_cap
    )
    documented = _documented_result()
    for key in documented:
        assert computed[key] == documented[key], key
    assert set(computed) == set(documented)


def test_the_worked_example_through_the_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from gridclear.cloud.cli import main

    book = tmp_path / "book.json"
    book.write_text(_block("book"), encoding="utf-8")
    assert main(["market", "clear", "--input", str(book)]) == 0
    assert json.loads(capsys.readouterr().out) == _documented_result()
