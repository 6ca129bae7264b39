"""The benchmark harness finds benchmarks and prints figures a person can read."""

from __future__ import annotations

import pytest

from bench.harness import Figure, discover, format_table, main


def test_discovers_benchmarks_with_their_descriptions() -> None:
    found = discover()
    assert "baseline" in found
    assert found["baseline"].startswith("Machine baselines")


def test_table_aligns_values_and_keeps_units() -> None:
    table = format_table(
        [
            ("ingest", Figure("stored", 123456.0, "readings/s", "50 per message")),
            ("ingest", Figure("ratio_to_broker", 0.4567, "x")),
        ]
    )
    lines = table.splitlines()
    assert lines[0].split() == ["benchmark", "figure", "value", "unit", "note"]
    assert "123,456" in lines[2]
    assert "readings/s" in lines[2]
    assert "0.4567" in lines[3]
    # Values are right-aligned in one column.
    assert lines[2].index("123,456") + len("123,456") == lines[3].index("0.4567") + len("0.4567")


def test_unknown_benchmark_is_refused_with_the_known_names(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["no-such-bench"])
    assert exited.value.code == 2
    assert "unknown benchmark(s) no-such-bench; known: " in capsys.readouterr().err


def test_list_names_every_benchmark(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--list"]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert listed == sorted(discover())
    assert "baseline" in listed
