"""Whatever a client sends, the ledger node answers in JSON-RPC's shape (never a malformed answer).

solana-py parses answers with solders, which panics on a malformed one, so the shape
matters more than the content here. The RPC layer runs over a real engine (LiteSVM
and its SQLite state in a temporary folder), called in process.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gridclear.cloud.ledger.node.engine import LedgerEngine
from gridclear.cloud.ledger.node.rpc import METHODS, RpcContext, handle_body


@pytest.fixture(scope="module")
def context(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RpcContext]:
    engine = LedgerEngine(state_dir=Path(tmp_path_factory.mktemp("ledger")), tick_s=0.05)
    engine.start()
    yield RpcContext(engine=engine, dev=True)
    engine.stop()


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=60),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)
plausible_params = st.lists(
    st.sampled_from(
        [
            "11111111111111111111111111111111",
            "TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA",
            "AAAA",
            "",
            0,
            -1,
            2**64,
            10**18,
            2**40,
            {"encoding": "jsonParsed"},
            {"encoding": "base64", "dataSlice": {"offset": 1, "length": 2}},
            {"mint": "11111111111111111111111111111111"},
            {"programId": "TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA"},
            {"searchTransactionHistory": True},
            {"sigVerify": True},
            {"minContextSlot": 0},
            ["11111111111111111111111111111111"],
        ]
    )
    | json_values,
    max_size=3,
)
requests = (
    st.fixed_dictionaries(
        {
            "jsonrpc": st.just("2.0") | json_values,
            "id": st.integers() | st.text(max_size=8) | st.none() | json_values,
            "method": st.sampled_from(sorted(METHODS)) | st.text(max_size=20),
            "params": plausible_params | json_values,
        }
    )
    | json_values
)


def check_answer(answer: Any) -> None:
    assert isinstance(answer, dict)
    assert answer["jsonrpc"] == "2.0"
    assert "id" in answer
    assert ("result" in answer) != ("error" in answer)
    if "error" in answer:
        error = answer["error"]
        assert isinstance(error["code"], int)
        assert isinstance(error["message"], str)
        assert set(error) <= {"code", "message", "data"}
        assert error["code"] != -32603, error  # an internal error is a bug here


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(request=requests)
def test_every_request_gets_a_well_formed_answer(context: RpcContext, request: Any) -> None:
    body = json.dumps(request).encode()
    answer = json.loads(asyncio.run(handle_body(context, body)))
    if isinstance(request, list) and 0 < len(request) <= 1000:
        assert isinstance(answer, list)
        assert len(answer) == len(request)
        for item in answer:
            check_answer(item)
    else:
        check_answer(answer)
