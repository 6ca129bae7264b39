"""The hand-built instructions and layouts of ledger.spl: byte for byte equal to
solana-py's and solders' builders (the reference), and accepted by the real programs
in LiteSVM."""

from __future__ import annotations

import pytest
import solders.compute_budget as compute_budget
from cloud.tests.ledger_support import Chain, Market, TransactionFailedError
from hypothesis import given, settings
from hypothesis import strategies as st
from solders.instruction import Instruction
from solders.keypair import Keypair
from solders.pubkey import Pubkey
from solders.system_program import CreateAccountParams
from solders.system_program import create_account as solders_create_account
from solders.token.state import Mint as SoldersMint
from solders.token.state import TokenAccount as SoldersTokenAccount
from spl.memo.constants import MEMO_PROGRAM_ID
from spl.memo.instructions import create_memo
from spl.memo.models import MemoParams
from spl.token import constants as token_constants
from spl.token import instructions as reference
from spl.token.models import (
    ApproveCheckedParams,
    InitializeMint2Params,
    MintToCheckedParams,
    RevokeParams,
    TransferCheckedParams,
)

from gridclear.cloud.errors import GridclearCloudError
from gridclear.cloud.ledger import spl

TOKEN = token_constants.TOKEN_PROGRAM_ID
keys = st.binary(min_size=32, max_size=32).map(Pubkey.from_bytes)
u64 = st.integers(min_value=0, max_value=spl.U64_MAX)
u8 = st.integers(min_value=0, max_value=255)


def same(ours: Instruction, theirs: Instruction) -> None:
    assert ours == theirs
    assert bytes(ours.data) == bytes(theirs.data)
    assert ours.accounts == theirs.accounts


# ---------------------------------------------------------------- the reference builders


def test_program_ids_are_the_references() -> None:
    assert spl.TOKEN_PROGRAM_ID == token_constants.TOKEN_PROGRAM_ID
    assert spl.ASSOCIATED_TOKEN_PROGRAM_ID == token_constants.ASSOCIATED_TOKEN_PROGRAM_ID
    assert spl.MEMO_PROGRAM_ID == MEMO_PROGRAM_ID
    assert spl.COMPUTE_BUDGET_PROGRAM_ID == compute_budget.ID
    assert spl.MINT_SIZE == token_constants.MINT_LEN
    assert spl.TOKEN_ACCOUNT_SIZE == token_constants.ACCOUNT_LEN


@settings(max_examples=50)
@given(keys, keys, keys, keys, u64, u8)
def test_transfer_checked_matches_solana_py(
    source: Pubkey, mint: Pubkey, dest: Pubkey, owner: Pubkey, amount: int, decimals: int
) -> None:
    params = TransferCheckedParams(
        program_id=TOKEN, source=source, mint=mint, dest=dest, owner=owner,
        amount=amount, decimals=decimals,
    )  # fmt: skip
    ours = spl.transfer_checked(source, mint, dest, owner, amount=amount, decimals=decimals)
    same(ours, reference.transfer_checked(params))


@settings(max_examples=50)
@given(keys, keys, keys, keys, u64, u8)
def test_approve_checked_matches_solana_py(
    source: Pubkey, mint: Pubkey, delegate: Pubkey, owner: Pubkey, amount: int, decimals: int
) -> None:
    params = ApproveCheckedParams(
        program_id=TOKEN, source=source, mint=mint, delegate=delegate, owner=owner,
        amount=amount, decimals=decimals,
    )  # fmt: skip
    ours = spl.approve_checked(source, mint, delegate, owner, amount=amount, decimals=decimals)
    same(ours, reference.approve_checked(params))


@settings(max_examples=20)
@given(keys, keys)
def test_revoke_matches_solana_py(source: Pubkey, owner: Pubkey) -> None:
    params = RevokeParams(program_id=TOKEN, account=source, owner=owner)
    same(spl.revoke(source, owner), reference.revoke(params))


@settings(max_examples=50)
@given(keys, keys, keys, u64, u8)
def test_mint_to_checked_matches_solana_py(
    mint: Pubkey, dest: Pubkey, authority: Pubkey, amount: int, decimals: int
) -> None:
    params = MintToCheckedParams(
        program_id=TOKEN, mint=mint, dest=dest, mint_authority=authority,
        amount=amount, decimals=decimals,
    )  # fmt: skip
    ours = spl.mint_to_checked(mint, dest, authority, amount=amount, decimals=decimals)
    same(ours, reference.mint_to_checked(params))


@settings(max_examples=30)
@given(keys, u8, keys, st.none() | keys)
def test_initialize_mint2_matches_solana_py(
    mint: Pubkey, decimals: int, authority: Pubkey, freeze: Pubkey | None
) -> None:
    params = InitializeMint2Params(
        program_id=TOKEN, mint=mint, decimals=decimals, mint_authority=authority,
        freeze_authority=freeze,
    )  # fmt: skip
    same(
        spl.initialize_mint2(mint, decimals, authority, freeze), reference.initialize_mint2(params)
    )


@settings(max_examples=20)
@given(keys, keys, keys)
def test_associated_token_accounts_match_solana_py(
    payer: Pubkey, owner: Pubkey, mint: Pubkey
) -> None:
    assert spl.associated_token_address(owner, mint) == reference.get_associated_token_address(
        owner, mint
    )
    same(
        spl.create_associated_token_account_idempotent(payer, owner, mint),
        reference.create_idempotent_associated_token_account(payer, owner, mint),
    )


@settings(max_examples=30)
@given(st.integers(min_value=0, max_value=2**32 - 1), u64)
def test_compute_budget_matches_solders(units: int, price: int) -> None:
    same(spl.set_compute_unit_limit(units), compute_budget.set_compute_unit_limit(units))
    same(spl.set_compute_unit_price(price), compute_budget.set_compute_unit_price(price))


@settings(max_examples=30)
@given(keys, keys, u64, u64, keys)
def test_create_account_matches_solders(
    payer: Pubkey, new: Pubkey, lamports: int, space: int, owner: Pubkey
) -> None:
    params = CreateAccountParams(
        from_pubkey=payer, to_pubkey=new, lamports=lamports, space=space, owner=owner
    )
    same(spl.create_account(payer, new, lamports, space, owner), solders_create_account(params))


@settings(max_examples=30)
@given(st.text(max_size=200), keys)
def test_memo_matches_solana_py_but_its_signer_is_read_only(text: str, signer: Pubkey) -> None:
    ours = spl.memo(text.encode(), [signer])
    theirs = create_memo(
        MemoParams(program_id=MEMO_PROGRAM_ID, signer=signer, message=text.encode())
    )
    assert ours.program_id == theirs.program_id
    assert bytes(ours.data) == bytes(theirs.data)
    assert [(m.pubkey, m.is_signer) for m in ours.accounts] == [
        (m.pubkey, m.is_signer) for m in theirs.accounts
    ]
    # The Memo program writes nothing: the spl-memo crate marks signers read-only.
    assert not ours.accounts[0].is_writable


# ---------------------------------------------------------------- arguments refused


@pytest.mark.parametrize(
    "amount", [2**64, -1, True, 1.0, 10**30], ids=["u64+1", "negative", "bool", "float", "huge"]
)
def test_an_amount_that_is_not_a_u64_is_refused(amount: object) -> None:
    a, b, c, d = (Pubkey.new_unique() for _ in range(4))
    builders = [
        lambda: spl.transfer_checked(a, b, c, d, amount=amount, decimals=3),  # type: ignore[arg-type]
        lambda: spl.approve_checked(a, b, c, d, amount=amount, decimals=3),  # type: ignore[arg-type]
        lambda: spl.mint_to_checked(a, b, c, amount=amount, decimals=3),  # type: ignore[arg-type]
        lambda: spl.set_compute_unit_price(amount),  # type: ignore[arg-type]
        lambda: spl.create_account(a, b, amount, 82, c),  # type: ignore[arg-type]
    ]
    for build in builders:
        with pytest.raises(spl.InstructionArgumentError, match=r"amount|lamports|micro_lamports"):
            build()


def test_the_largest_u64_is_accepted_and_the_error_is_the_clouds() -> None:
    a, b, c, d = (Pubkey.new_unique() for _ in range(4))
    spl.transfer_checked(a, b, c, d, amount=spl.U64_MAX, decimals=255)
    with pytest.raises(GridclearCloudError) as caught:
        spl.transfer_checked(a, b, c, d, amount=1, decimals=256)
    assert caught.value.code == "bad_instruction_argument"
    assert isinstance(caught.value, ValueError)
    with pytest.raises(spl.InstructionArgumentError, match="units"):
        spl.set_compute_unit_limit(2**32)


def test_a_memo_must_be_utf8_bytes() -> None:
    signer = Pubkey.new_unique()
    with pytest.raises(spl.InstructionArgumentError, match="UTF-8"):
        spl.memo(b"\xff\xfe", [signer])
    with pytest.raises(spl.InstructionArgumentError, match="bytes"):
        spl.memo("text", [signer])  # type: ignore[arg-type]


# ---------------------------------------------------------------- layouts


@pytest.fixture(scope="module")
def market() -> Market:
    return Market.open(Chain(), 3, funds=5_000_000, cap=1_000_000)


def test_token_accounts_parse_as_the_program_wrote_them(market: Market) -> None:
    chain, owner = market.chain, market.wallets[0].pubkey()
    address = spl.associated_token_address(owner, market.mints.payment)
    account = chain.svm.get_account(address)
    assert account is not None
    assert account.owner == spl.TOKEN_PROGRAM_ID
    data = bytes(account.data)
    ours = spl.parse_token_account(data)
    assert ours == spl.TokenAccount(
        mint=market.mints.payment,
        owner=owner,
        amount=5_000_000,
        delegate=market.authority.pubkey(),
        delegated_amount=1_000_000,
        state=spl.AccountState.INITIALIZED,
    )
    theirs = SoldersTokenAccount.from_bytes(data)
    assert (ours.mint, ours.owner, ours.amount, ours.delegate, ours.delegated_amount) == (
        theirs.mint, theirs.owner, theirs.amount, theirs.delegate, theirs.delegated_amount,
    )  # fmt: skip


def test_revoke_removes_the_delegate(market: Market) -> None:
    chain, wallet = market.chain, market.wallets[2]
    source = spl.associated_token_address(wallet.pubkey(), market.mints.energy)
    chain.run(wallet, [spl.revoke(source, wallet.pubkey())])
    account = chain.token_account(wallet.pubkey(), market.mints.energy)
    assert account.delegate is None
    assert account.delegated_amount == 0


def test_mints_parse_as_the_program_wrote_them(market: Market) -> None:
    chain = market.chain
    for mint, authority, decimals in (
        (market.mints.energy, market.oracle.pubkey(), 3),
        (market.mints.payment, market.treasurer.pubkey(), 6),
    ):
        account = chain.svm.get_account(mint)
        assert account is not None
        ours = spl.parse_mint(bytes(account.data))
        theirs = SoldersMint.from_bytes(bytes(account.data))
        assert ours.decimals == decimals == theirs.decimals
        assert ours.mint_authority == authority == theirs.mint_authority
        assert ours.freeze_authority is None
        assert ours.supply == theirs.supply
    assert chain.mint_info(market.mints.payment).supply == 3 * 5_000_000


def test_a_freeze_authority_round_trips_through_the_program() -> None:
    chain = Chain()
    payer, freezer = chain.funded(), Pubkey.new_unique()
    mint = Keypair()
    rent = chain.svm.minimum_balance_for_rent_exemption(spl.MINT_SIZE)
    chain.run(
        payer,
        [
            spl.create_account(
                payer.pubkey(), mint.pubkey(), rent, spl.MINT_SIZE, spl.TOKEN_PROGRAM_ID
            ),
            spl.initialize_mint2(mint.pubkey(), 9, payer.pubkey(), freezer),
        ],
        signers=[mint],
    )
    assert chain.mint_info(mint.pubkey()) == spl.Mint(
        supply=0, decimals=9, mint_authority=payer.pubkey(), freeze_authority=freezer
    )


def test_creating_a_token_account_again_is_harmless(market: Market) -> None:
    chain = market.chain
    owner = market.wallets[0].pubkey()
    before = chain.token_account(owner, market.mints.payment)
    chain.create_token_accounts(market.authority, [owner], market.mints.payment)
    assert chain.token_account(owner, market.mints.payment) == before


def test_the_program_refuses_wrong_decimals(market: Market) -> None:
    owner = market.wallets[0].pubkey()
    with pytest.raises(TransactionFailedError, match=r"0x12|MintDecimalsMismatch|Custom"):
        market.chain.run(
            market.oracle,
            [
                spl.mint_to_checked(
                    market.mints.energy,
                    spl.associated_token_address(owner, market.mints.energy),
                    market.oracle.pubkey(),
                    amount=5,
                    decimals=6,
                )
            ],
        )


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (bytes(164), r"has 165 bytes"),
        (bytes(165), "state 0"),
    ],
)
def test_bad_token_account_data_is_refused(data: bytes, message: str) -> None:
    with pytest.raises(spl.AccountDataError, match=message):
        spl.parse_token_account(data)


def test_a_bad_option_tag_is_refused(market: Market) -> None:
    owner = market.wallets[0].pubkey()
    account = market.chain.svm.get_account(
        spl.associated_token_address(owner, market.mints.payment)
    )
    assert account is not None
    data = bytearray(bytes(account.data))
    data[72] = 2  # the delegate's option tag
    with pytest.raises(spl.AccountDataError, match="delegate"):
        spl.parse_token_account(bytes(data))
    mint = market.chain.svm.get_account(market.mints.energy)
    assert mint is not None
    with pytest.raises(spl.AccountDataError, match="82 bytes"):
        spl.parse_mint(bytes(mint.data) + b"\x00")
    with pytest.raises(spl.AccountDataError, match="not initialised"):
        spl.parse_mint(bytes(82))
