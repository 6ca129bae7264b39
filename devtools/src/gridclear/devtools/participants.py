"""Demo participants: one trader per household, bidding or offering from its meter.

Each household signs in with its own account (which owns the household's meters)
and, for the open slot closest to gate closure, places one order sized from what
its grid meter measures now: importing ``P`` W becomes a bid for ``P * slot
length`` Wh, exporting becomes a supply of that much. Prices are drawn from
overlapping ranges, seeded per household, so slots clear with trades and the
result is reproducible. Everything goes through the public REST API, as a real
app would, with an ``Idempotency-Key`` per household and slot, so a restarted
participant never places twice.

The standard library's ``urllib`` is enough for a handful of requests a second and
keeps the demo free of an HTTP client dependency.
"""

from __future__ import annotations

import json
import logging
import random
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "BID_PRICES",
    "OFFER_PRICES",
    "ApiClient",
    "ApiRequestError",
    "Household",
    "Participant",
    "onboard_wallet",
    "order_for",
    "run_participants",
    "set_up_households",
]

log = logging.getLogger(__name__)

BID_PRICES = (150_000, 300_000)
"""Range of bid prices, base units per kWh (0.15 to 0.30 of a 6-decimal token)."""
OFFER_PRICES = (80_000, 220_000)


class ApiRequestError(RuntimeError):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code


@dataclass
class ApiClient:
    """A tiny JSON client for the gridclear API (envelope aware)."""

    base_url: str
    token: str | None = None
    timeout_s: float = 10.0

    def call(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None = None,
        *,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        """The envelope's ``data``; raises :class:`ApiRequestError` for an error answer."""
        request = urllib.request.Request(  # noqa: S310 -- the operator's own API URL
            self.base_url.rstrip("/") + path,
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={
                "Content-Type": "application/json",
                **({"Authorization": f"Bearer {self.token}"} if self.token else {}),
                **(headers or {}),
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:  # noqa: S310
                return json.loads(response.read())["data"]
        except urllib.error.HTTPError as error:
            try:
                failure = json.loads(error.read())["error"]
            except (ValueError, KeyError, TypeError):
                failure = {"code": "HTTP_ERROR", "message": str(error)}
            raise ApiRequestError(error.code, failure["code"], failure["message"]) from None

    def login(self, email: str, password: str) -> dict[str, Any]:
        session: dict[str, Any] = self.call(
            "POST", "/api/auth/login", {"email": email, "password": password}
        )
        self.token = session["accessToken"]
        return session


@dataclass(frozen=True)
class Household:
    """A household's gateway and meters (as the demo enrolled them) and its account."""

    name: str
    device_id: str
    meters: tuple[dict[str, str], ...]
    """Each ``{"name", "role", "model"}``."""
    email: str
    password: str
    wallet_key_file: str | None = None
    """The household's own Solana wallet (a key file), when the market settles on a ledger."""


def onboard_wallet(client: ApiClient, household: Household, *, allowance: int) -> str | None:
    """Link the household's wallet to its account and approve settlement, as a wallet app would.

    The wallet signs the sign-in challenge and the approval transaction the service
    offers; the service never sees its key. Returns the approval's state, or None
    without a wallet. Safe to repeat: a wallet linked already is kept.
    """
    if household.wallet_key_file is None:
        return None
    from gridclear.cloud.ledger.keys import load_key_file
    from gridclear.devtools.wallet import sign_offered

    wallet = load_key_file(Path(household.wallet_key_file))
    address = str(wallet.pubkey)
    profile = client.call("GET", "/api/users/profile")
    if address not in profile["wallets"]:
        challenge = client.call("POST", "/api/users/wallets/challenge", {"walletAddress": address})
        message = challenge["message"]
        try:
            client.call(
                "POST",
                "/api/users/wallets",
                {
                    "walletAddress": address,
                    "message": message,
                    "signature": str(wallet.keypair.sign_message(message.encode())),
                },
            )
        except ApiRequestError as error:
            if error.code != "CONFLICT":
                raise
    offer = client.call(
        "POST",
        "/api/blockchain/approvals",
        {"wallet": address, "energyCap": allowance, "paymentCap": allowance},
    )
    done = client.call(
        "POST",
        "/api/blockchain/transactions",
        {"transaction": sign_offered(offer["transaction"], wallet.keypair)},
    )
    return str(done["state"])


def set_up_households(
    operator: ApiClient, households: Sequence[Household], *, market: Mapping[str, int]
) -> None:
    """Create each household's account (once) and bind its meters to it; set the market."""
    if market:
        operator.call("PUT", "/api/market/config", dict(market))
    for household in households:
        probe = ApiClient(operator.base_url)
        try:
            user = probe.call(
                "POST",
                "/api/auth/register",
                {"email": household.email, "password": household.password},
            )["user"]
        except ApiRequestError as error:
            if error.code != "CONFLICT":
                raise
            user = probe.login(household.email, household.password)["user"]
        for meter in household.meters:
            operator.call(
                "PUT",
                f"/api/devices/{household.device_id}/meters/{meter['name']}",
                {"ownerId": user["id"], "role": meter["role"], "model": meter["model"]},
            )


def _quantity(power_w: int, slot_length_s: int, config: Mapping[str, int]) -> int:
    step = config["quantityStepWh"]
    quantity = abs(power_w) * slot_length_s // 3600 // step * step
    return min(max(quantity, config["minQuantityWh"]), config["maxQuantityWh"])


def order_for(
    meters: Sequence[Mapping[str, Any]], config: Mapping[str, int], rng: random.Random
) -> tuple[str, dict[str, int]] | None:
    """("bids" or "supplies", body without the slot) from the meters' power, or None.

    The grid connection meter (role ``both``) carries the household's net position;
    without one, the first meter with a power reading is used.
    """
    usable = [m for m in meters if m.get("powerW")]
    if not usable:
        return None
    meter = next((m for m in usable if m["role"] == "both"), usable[0])
    power = int(meter["powerW"])
    if power > 0 and meter["role"] in ("import", "both"):
        path, prices = "bids", BID_PRICES
    elif power < 0 and meter["role"] in ("export", "both"):
        path, prices = "supplies", OFFER_PRICES
    else:
        return None
    price = rng.randrange(prices[0], prices[1] + 1, 1000)
    price = min(max(price, config["priceFloor"]), config["priceCap"])
    quantity = _quantity(power, config["slotLengthS"], config)
    return path, {"meterId": int(meter["id"]), "quantityWh": quantity, "price": price}


@dataclass
class Participant:
    """One household trading: one order per slot, reports its fills."""

    household: Household
    client: ApiClient
    rng: random.Random
    say: Callable[[str], None] = print
    placed: set[int] = field(default_factory=set)
    pending: dict[int, tuple[str, int]] = field(default_factory=dict)
    """Order id -> (API path, slot id), until the order's slot has cleared."""

    def step(self, config: Mapping[str, int], open_slots: Sequence[Mapping[str, Any]]) -> None:
        """Place in the soonest open slot if not done yet; report cleared orders.

        ``open_slots`` is ``GET /api/timeslots/active``, fetched once per round for
        every household: the demo's traders share one address, and so one rate limit.
        """
        try:
            self._step(config, open_slots)
        except ApiRequestError as error:
            if error.status == 401:  # the access token expired: sign in again
                self.client.login(self.household.email, self.household.password)
            else:
                self.say(f"  {self.household.name}: {error}")

    def _step(self, config: Mapping[str, int], open_slots: Sequence[Mapping[str, Any]]) -> None:
        if open_slots:
            slot = min(open_slots, key=lambda s: s["closesAt"])
            if slot["id"] not in self.placed:
                meters = self.client.call("GET", "/api/my/meters")
                order = order_for(meters, config, self.rng)
                self.placed.add(slot["id"])
                if order is not None:
                    path, body = order
                    placed = self.client.call(
                        "POST",
                        f"/api/{path}",
                        {"timeslotId": slot["id"], **body},
                        headers={"Idempotency-Key": f"{self.household.name}-{slot['id']}"},
                    )
                    self.pending[placed["id"]] = (path, slot["id"])
                    noun = "bid" if path == "bids" else "offer"
                    self.say(
                        f"  {self.household.name}: {noun} {body['quantityWh']} Wh"
                        f" at {body['price']} per kWh for slot {slot['id']}"
                        f" ({slot['startTime']})"
                    )
        still_open = {s["id"] for s in open_slots}
        for order_id, (path, slot_id) in list(self.pending.items()):
            if slot_id in still_open:
                continue  # nothing to report before gate closure
            order = self.client.call("GET", f"/api/{path}/{order_id}")
            if order["status"] == "active":
                continue  # closed, not cleared yet
            del self.pending[order_id]
            self.say(
                f"  {self.household.name}: slot {slot_id} cleared, order {order_id}"
                f" {order['status']}:"
                f" {order['filledWh']} of {order['quantityWh']} Wh, amount {order['amount']}"
            )


def run_participants(
    api_url: str,
    households: Sequence[Household],
    *,
    operator_email: str,
    operator_password: str,
    market: Mapping[str, int],
    interval_s: float = 2.0,
    seed: int = 2025,
    allowance: int = 10**12,
) -> None:
    """Set up the households, then trade until interrupted (KeyboardInterrupt)."""
    operator = ApiClient(api_url)
    operator.login(operator_email, operator_password)
    set_up_households(operator, households, market=market)
    participants = []
    for index, household in enumerate(households):
        client = ApiClient(api_url)
        client.login(household.email, household.password)
        try:
            state = onboard_wallet(client, household, allowance=allowance)
        except ApiRequestError as error:  # it trades anyway; its trades fail as no_wallet
            print(f"  {household.name}: onboarding its wallet failed: {error}", flush=True)
        else:
            if state is not None:
                print(f"  {household.name}: wallet onboarded for settlement ({state})", flush=True)
        # Reproducible demo prices, not secrets.
        rng = random.Random(seed + index)  # noqa: S311
        participants.append(Participant(household, client, rng))
    print(f"{len(participants)} participants trading on {api_url}", flush=True)
    config: dict[str, int] = {}
    next_config = 0.0
    while True:
        if time.monotonic() >= next_config:
            config = operator.call("GET", "/api/market/config")
            next_config = time.monotonic() + 30
        try:
            open_slots = operator.call("GET", "/api/timeslots/active")
        except ApiRequestError as error:
            print(f"  could not list the open slots: {error}", flush=True)
        else:
            for participant in participants:
                participant.step(config, open_slots)
        time.sleep(interval_s)
