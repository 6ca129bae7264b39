"""One exception tree per distribution, each class with a stable ``code``.

Every module of each distribution is imported and every exception class it
defines is checked: it derives from its distribution's root, its ``code`` is the
one released (the table below: changing a code is a breaking change, made here
on purpose), and no two classes define the same code unless one is the other's
subclass restating it. A new module or class is covered without editing the
walk; a new class must be added to the table.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

ROOTS = {
    "gridclear.cloud": ("gridclear.cloud.errors", "GridclearCloudError"),
    "gridclear.shared": ("gridclear.shared.errors", "GridclearSharedError"),
    "gridclear.edge": ("gridclear.edge.errors", "GridclearEdgeError"),
    "gridclear.metersim": ("gridclear.metersim.errors", "MetersimError"),
}

NOT_ERRORS = {
    # A signal that ends a publishing session, never an error anyone should catch.
    "gridclear.edge.publisher._Finished",
}

NOT_WALKED = {
    # The workshop, leaving the product for gridclear-devtools.
    "gridclear.cloud.demo",
    "gridclear.cloud._demo_plan",
    "gridclear.cloud.localservices",
    "gridclear.cloud.market.participants",
    "gridclear.cloud.market._participants_cli",
    "gridclear.metersim.process",
    # The hand-made MQTT client, being replaced by a maintained library.
    "gridclear.cloud.ingest._mqtt",
}

RELEASED = {
    "gridclear.cloud.errors.GridclearCloudError": "cloud_error",
    "gridclear.cloud.api.errors.ApiError": "INTERNAL_ERROR",
    "gridclear.cloud.api.ratelimit.RateLimitExceededError": "rate_limited",
    "gridclear.cloud.devices.registry.DeviceError": "device_error",
    "gridclear.cloud.devices.registry.NotFoundError": "not_found",
    "gridclear.cloud.devices.registry.DeviceExistsError": "device_exists",
    "gridclear.cloud.devices.registry.KeyConflictError": "key_conflict",
    "gridclear.cloud.devices.registry.EnrolmentError": "enrolment_refused",
    "gridclear.cloud.devices.registry.HasKeyError": "device_has_key",
    "gridclear.cloud.identity.accounts.AccountConflictError": "account_conflict",
    "gridclear.cloud.identity.accounts.LastAdminError": "last_admin",
    "gridclear.cloud.identity.bootstrap.BootstrapError": "bootstrap_refused",
    "gridclear.cloud.identity.sessions.RefreshError": "refresh_refused",
    "gridclear.cloud.identity.siws.MessageFormatError": "malformed_message",
    "gridclear.cloud.identity.tokens.TokenError": "invalid",
    "gridclear.cloud.ledger.keys.ServiceKeyError": "service_key",
    "gridclear.cloud.ledger.keys.ServiceKeyExistsError": "service_key_exists",
    "gridclear.cloud.ledger.keys.ServiceKeyMissingError": "service_key_missing",
    "gridclear.cloud.ledger.keys.ServiceKeyPermissionError": "service_key_permissions",
    "gridclear.cloud.ledger.keys.ServiceKeyFormatError": "service_key_malformed",
    "gridclear.cloud.ledger.spl.InstructionArgumentError": "bad_instruction_argument",
    "gridclear.cloud.ledger.spl.AccountDataError": "bad_account_data",
    "gridclear.cloud.ledger.transactions.TransactionBuildError": "transaction_unbuildable",
    "gridclear.cloud.ledger.transactions.TransactionTooLargeError": "transaction_too_large",
    "gridclear.cloud.ledger.transactions.TooManyAccountLocksError": "too_many_account_locks",
    "gridclear.cloud.ledger.node.codec.RpcError": "rpc_refused",
    "gridclear.cloud.ledger.client.LedgerUnavailableError": "blockchain_error",
    "gridclear.cloud.market.decimals.DecimalTermError": "bad_decimal",
    "gridclear.cloud.market.store.MeterRequiredError": "meter_required",
    "gridclear.cloud.market.store.SelfTradeError": "self_trade",
    "gridclear.cloud.settlement.funds.InsufficientBalanceError": "insufficient_balance",
    "gridclear.cloud.settlement.funds.WalletRequiredError": "wallet_required",
    "gridclear.cloud.settlement.onboarding.ApprovalError": "approval_refused",
    "gridclear.cloud.settlement.setup.LedgerSetupError": "ledger_setup",
    "gridclear.cloud.identity.account_links.LinkRefusedError": "link_refused",
    "gridclear.cloud.identity.accounts.WalletUnlinkError": "wallet_unlink_refused",
    "gridclear.cloud.ledger.node.store.StoreError": "ledger_state_unusable",
    "gridclear.cloud.market._priority.DuplicateIdError": "duplicate_order_id",
    "gridclear.cloud.market.clearing.BookError": "bad_book",
    "gridclear.cloud.market.config.ConfigError": "bad_market_config",
    "gridclear.cloud.market.store.MarketError": "market",
    "gridclear.cloud.market.store.AccountInactiveError": "account_inactive",
    "gridclear.cloud.market.store.SlotNotFoundError": "slot_not_found",
    "gridclear.cloud.market.store.SlotNotOpenError": "slot_not_open",
    "gridclear.cloud.market.store.TermsOutOfBoundsError": "out_of_bounds",
    "gridclear.cloud.market.store.OrderNotFoundError": "order_not_found",
    "gridclear.cloud.market.store.OrderStateError": "order_not_active",
    "gridclear.cloud.market.store.StaleVersionError": "stale_version",
    "gridclear.cloud.market.store.MeterNotAllowedError": "meter_not_allowed",
    "gridclear.cloud.market.store.IdempotencyMismatchError": "idempotency_key_reused",
    "gridclear.cloud.realtime._manager.FanoutError": "fanout_failed",
    "gridclear.cloud.realtime._payload.BadRequestError": "bad_request",
    "gridclear.cloud.settings.SettingsError": "bad_settings",
    "gridclear.cloud.settlement.arithmetic.SettlementInputError": "bad_settlement_input",
    "gridclear.cloud.storage.migrations.MigrationError": "migration_refused",
    "gridclear.shared.errors.GridclearSharedError": "shared_error",
    "gridclear.shared.errors.ProtocolError": "malformed",
    "gridclear.shared.errors.MalformedMessageError": "malformed",
    "gridclear.shared.errors.MessageTooLargeError": "too_large",
    "gridclear.shared.errors.UnsupportedAlgorithmError": "bad_algorithm",
    "gridclear.shared.errors.UnknownKeyError": "unknown_key",
    "gridclear.shared.errors.BadSignatureError": "bad_signature",
    "gridclear.shared.errors.UnknownVersionError": "unknown_version",
    "gridclear.shared.errors.InvalidPayloadError": "invalid_payload",
    "gridclear.shared.errors.DeviceMismatchError": "device_mismatch",
    "gridclear.shared.errors.KeyFileError": "key_file",
    "gridclear.edge.errors.GridclearEdgeError": "edge_error",
    "gridclear.edge.config.ConfigError": "bad_config",
    "gridclear.edge.config._KeyError": "bad_config_key",
    "gridclear.edge.enrol.EnrolError": "enrol_failed",
    "gridclear.edge.modbus._sunspec.SunSpecError": "not_sunspec",
    "gridclear.edge.modbus._transport.ModbusReadError": "bad_response",
    "gridclear.edge.outbox.OutboxError": "outbox_unusable",
    "gridclear.metersim.errors.MetersimError": "metersim_error",
    "gridclear.metersim.errors.ConfigError": "bad_config",
    "gridclear.metersim.errors.ControlError": "bad_command",
    "gridclear.metersim.errors.FrameError": "bad_frame",
}


def _exception_classes(package: str) -> dict[str, type[BaseException]]:
    """Every exception class defined in ``package``'s modules, by dotted name."""
    found: dict[str, type[BaseException]] = {}
    top = importlib.import_module(package)
    for info in pkgutil.walk_packages(top.__path__, f"{package}."):
        if info.name in NOT_WALKED or info.name.endswith(".__main__"):
            continue
        module = importlib.import_module(info.name)
        for value in vars(module).values():
            if (
                inspect.isclass(value)
                and issubclass(value, BaseException)
                and value.__module__ == info.name
            ):
                found[f"{info.name}.{value.__qualname__}"] = value
    return found


@pytest.mark.parametrize("package", sorted(ROOTS))
def test_every_exception_class_derives_from_its_distributions_root(package: str) -> None:
    module, name = ROOTS[package]
    root = getattr(importlib.import_module(module), name)
    classes = _exception_classes(package)
    assert classes, package
    strays = sorted(
        dotted
        for dotted, cls in classes.items()
        if dotted not in NOT_ERRORS and not issubclass(cls, root)
    )
    assert strays == [], f"not under {name}"


@pytest.mark.parametrize("package", sorted(ROOTS))
def test_every_code_is_the_released_one(package: str) -> None:
    codes = {
        dotted: getattr(cls, "code", None)
        for dotted, cls in _exception_classes(package).items()
        if dotted not in NOT_ERRORS
    }
    released = {dotted: code for dotted, code in RELEASED.items() if dotted.startswith(package)}
    assert codes == released
    assert all(isinstance(code, str) and code for code in codes.values())


@pytest.mark.parametrize("package", sorted(ROOTS))
def test_no_two_classes_define_one_code(package: str) -> None:
    own = {
        cls: cls.__dict__["code"]
        for dotted, cls in _exception_classes(package).items()
        if dotted not in NOT_ERRORS and "code" in cls.__dict__
    }
    clashes = [
        (a.__qualname__, b.__qualname__, code)
        for a, code in own.items()
        for b, other in own.items()
        if a is not b and code == other and not issubclass(a, b) and not issubclass(b, a)
    ]
    assert clashes == []


def test_reason_is_code_under_its_older_name() -> None:
    from gridclear.cloud.market.store import SlotNotOpenError
    from gridclear.edge.modbus._transport import ModbusReadError
    from gridclear.metersim.errors import ConfigError
    from gridclear.shared.errors import BadSignatureError, Reason

    assert SlotNotOpenError("x").reason == SlotNotOpenError("x").code == "slot_not_open"
    refused = BadSignatureError("no")
    assert refused.reason is refused.code is Reason.BAD_SIGNATURE
    assert ModbusReadError("timeout", "late").reason == "timeout"
    assert ConfigError("bad", reason="unknown_model").code == "unknown_model"
