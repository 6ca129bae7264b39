"""``gridclear-cloud market clear``: what an auditor runs, and what it says about bad books."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gridclear.cloud.cli import main

BOOK = {
    "price_floor": 0,
    "price_cap": 1000,
    "orders": [
        {"id": "q", "side": "buy", "quantity_wh": 1000, "price": 300, "submitted_at": 5},
        {"id": "p", "side": "buy", "quantity_wh": 1000, "price": 300, "submitted_at": 5},
        {"id": "r", "side": "buy", "quantity_wh": 1000, "price": 300, "submitted_at": 4},
        {"id": "s", "side": "sell", "quantity_wh": 2000, "price": 100, "submitted_at": 0},
    ],
}


def write(tmp_path: Path, content: str | bytes, name: str = "book.json") -> Path:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def run_main(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["market", "clear", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_clear_prints_price_volume_fills_and_trades(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_main(capsys, "--input", str(write(tmp_path, json.dumps(BOOK))))
    assert (code, err) == (0, "")
    result = json.loads(out)
    assert (result["price"], result["volume_wh"], result["total_amount"]) == (300, 2000, 599)
    assert [(f["id"], f["filled_wh"], f["amount"]) for f in result["fills"]] == [
        ("r", 667, 200),
        ("p", 667, 200),
        ("q", 666, 199),
        ("s", 2000, 599),
    ]
    assert result["trades"] == [
        {"buy_id": "r", "sell_id": "s", "quantity_wh": 667, "price": 300, "amount": 200},
        {"buy_id": "p", "sell_id": "s", "quantity_wh": 667, "price": 300, "amount": 200},
        {"buy_id": "q", "sell_id": "s", "quantity_wh": 666, "price": 300, "amount": 199},
    ]


def test_summary_output_file_and_what_if_bounds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    book = write(tmp_path, json.dumps(BOOK))
    output = tmp_path / "result.json"
    code, out, _ = run_main(
        capsys, "--input", str(book), "--output", str(output), "--summary", "--price-cap", "400"
    )
    assert (code, out) == (0, "")
    result = json.loads(output.read_text())
    assert "fills" not in result
    assert "trades" not in result
    assert (result["price"], result["price_cap"], result["trade_count"]) == (300, 400, 3)
    assert (result["bid_count"], result["offer_count"]) == (3, 1)


def test_a_price_cap_below_an_order_is_refused_naming_the_order(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    book = write(tmp_path, json.dumps(BOOK))
    code, out, err = run_main(capsys, "--input", str(book), "--price-cap", "250")
    assert (code, out) == (2, "")
    assert "order #0 (id 'q')" in err
    assert "[bad_price]" in err


def _order(**changes: Any) -> dict[str, Any]:
    order = {"id": 1, "side": "buy", "quantity_wh": 10, "price": 5, "submitted_at": 0}
    order.update(changes)
    return {k: v for k, v in order.items() if v is not ...}


BAD_BOOKS: list[tuple[str, str | bytes, str]] = [
    ("not json", "{orders: []}", "[malformed]"),
    ("truncated", '{"orders": [', "[malformed]"),
    ("not utf-8", b'{"orders": [], "x": "\xff"}', "not UTF-8"),
    ("a list", "[]", "[malformed]"),
    ("no orders", "{}", "no 'orders'"),
    ("orders not a list", '{"orders": {}}', "[malformed]"),
    ("unknown book key", '{"orders": [], "price_cpa": 5}', "'price_cpa'"),
    ("duplicate key", '{"orders": [], "orders": []}', "appears twice"),
    ("order not an object", '{"orders": [5]}', "order #0 must be a JSON object"),
    ("missing field", json.dumps({"orders": [_order(price=...)]}), "has no 'price'"),
    ("unknown field", json.dumps({"orders": [_order(colour="red")]}), "'colour'"),
    ("float quantity", json.dumps({"orders": [_order(quantity_wh=1.5)]}), "[bad_quantity]"),
    ("bool quantity", json.dumps({"orders": [_order(quantity_wh=True)]}), "[bad_quantity]"),
    ("zero quantity", json.dumps({"orders": [_order(quantity_wh=0)]}), "[bad_quantity]"),
    ("huge price", json.dumps({"orders": [_order(price=2**64)]}), "[bad_price]"),
    (
        "NaN price",
        '{"orders": [{"id": 1, "side": "buy", "quantity_wh": 1, "price": NaN, "submitted_at": 0}]}',
        "NaN",
    ),
    ("string time", json.dumps({"orders": [_order(submitted_at="now")]}), "[bad_submitted_at]"),
    ("bad side", json.dumps({"orders": [_order(side="bid")]}), "[bad_side]"),
    ("null id", json.dumps({"orders": [_order(id=None)]}), "[bad_id]"),
    ("mixed ids", json.dumps({"orders": [_order(), _order(id="b")]}), "[bad_id]"),
    ("duplicate ids", json.dumps({"orders": [_order(), _order(side="sell")]}), "[duplicate_id]"),
    (
        "floor above cap",
        json.dumps({"orders": [], "price_floor": 9, "price_cap": 1}),
        "[bad_price_bounds]",
    ),
    ("nested deep", "[" * 100_000 + "]" * 100_000, "[malformed]"),
]


@pytest.mark.parametrize(
    ("content", "expected"), [b[1:] for b in BAD_BOOKS], ids=[b[0] for b in BAD_BOOKS]
)
def test_a_bad_book_gets_one_clear_line_and_exit_code_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | bytes, expected: str
) -> None:
    code, out, err = run_main(capsys, "--input", str(write(tmp_path, content)))
    assert (code, out) == (2, "")
    assert err.count("\n") == 1
    assert err.startswith("gridclear-cloud market clear: error: ")
    assert expected in err


def test_a_missing_file_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_main(capsys, "--input", str(tmp_path / "absent.json"))
    assert code == 2
    assert "cannot read" in err
    assert "No such file" in err


def test_the_installed_command_reads_stdin_and_never_shows_a_traceback() -> None:
    executable = Path(sys.executable).parent / "gridclear-cloud"
    command = [str(executable), "market", "clear", "--input", "-"]
    good = subprocess.run(
        command, input=json.dumps(BOOK), capture_output=True, text=True, timeout=60, check=False
    )
    assert (good.returncode, good.stderr) == (0, "")
    assert json.loads(good.stdout)["price"] == 300
    bad = subprocess.run(
        command, input='{"orders": [1', capture_output=True, text=True, timeout=60, check=False
    )
    assert bad.returncode == 2
    assert bad.stdout == ""
    assert "Traceback" not in bad.stderr
    assert bad.stderr.count("\n") == 1
