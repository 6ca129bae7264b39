"""Blocks and the window of valid blockhashes: pure, so restarts and ages are easy to test.

A validator accepts a transaction whose blockhash is one of its last 150 blocks'
(``MAX_PROCESSING_AGE``): a blockhash made at block height ``h`` is valid while the
current height is at most ``h + 150``, which is the ``lastValidBlockHeight``
``getLatestBlockhash`` reports. LiteSVM alone knows only its latest blockhash, so
the node checks blockhashes itself, against this window, and runs LiteSVM with its
own check off.

The node makes its own blockhashes, a hash chain from a random genesis hash
(``sha256(previous || height)``), rather than LiteSVM's: a fresh LiteSVM starts
from the same sequence every time, so its blockhashes would repeat after a
restart and across ledgers, and a transaction signed for one ledger or one run
could be valid on another.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from solders.hash import Hash

__all__ = ["MAX_PROCESSING_AGE", "Block", "BlockWindow"]

MAX_PROCESSING_AGE: Final = 150
"""How many blocks a blockhash stays valid after its own (Solana's constant)."""


@dataclass(frozen=True, slots=True)
class Block:
    """One produced block: its height, slot, blockhash and wall time (Unix seconds)."""

    height: int
    slot: int
    blockhash: Hash
    unix_time: int

    def successor(self, *, unix_time: int) -> Block:
        """The next block: one slot and one height on, its blockhash chained to ours."""
        digest = hashlib.sha256(bytes(self.blockhash) + (self.height + 1).to_bytes(8, "little"))
        return Block(
            height=self.height + 1,
            slot=self.slot + 1,
            blockhash=Hash(digest.digest()),
            unix_time=unix_time,
        )


class BlockWindow:
    """The latest block and the blocks whose blockhashes are still valid.

    Built from the stored blocks (any order, at least one); older ones than the
    window holds are ignored.
    """

    def __init__(self, blocks: Iterable[Block]) -> None:
        ordered = sorted(blocks, key=lambda block: block.height)
        if not ordered:
            raise ValueError("a block window needs at least one block")
        self._blocks: deque[Block] = deque(maxlen=MAX_PROCESSING_AGE + 1)
        self._heights: dict[Hash, int] = {}
        for block in ordered:
            self._push(block)

    def _push(self, block: Block) -> None:
        if len(self._blocks) == self._blocks.maxlen:
            dropped = self._blocks.popleft()
            self._heights.pop(dropped.blockhash, None)
        self._blocks.append(block)
        self._heights[block.blockhash] = block.height

    @property
    def latest(self) -> Block:
        return self._blocks[-1]

    @property
    def last_valid_block_height(self) -> int:
        """Until which height the latest blockhash is valid."""
        return self.latest.height + MAX_PROCESSING_AGE

    @property
    def blocks(self) -> list[Block]:
        """The blocks of the window, oldest first."""
        return list(self._blocks)

    def advance(self, *, unix_time: int) -> Block:
        """Produce the next block; the oldest blockhash may leave the window."""
        block = self.latest.successor(unix_time=unix_time)
        self._push(block)
        return block

    def is_valid(self, blockhash: Hash) -> bool:
        """Whether a transaction with ``blockhash`` may be processed now."""
        height = self._heights.get(blockhash)
        return height is not None and self.latest.height - height <= MAX_PROCESSING_AGE
