-- Settlement on Solana (DESIGN §9, docs/SETTLEMENT.md): the ledger this database
-- settles on, every transaction gridclear signs for it (recorded before it is sent),
-- the oracle's mints and each trade's delivery versus payment, participants'
-- onboarding approvals, and reconciliation runs. Amounts are integer base units:
-- Wh for energy (the energy mint has 3 decimals: 1 base unit = 1 Wh), the payment
-- mint's base units for money.

-- One row once `gridclear-cloud ledger init` ran: which ledger and mints. A database
-- settles on one ledger only; `genesis_hash` lets every process refuse another.
CREATE TABLE ledger_setup (
    singleton             boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    genesis_hash          text NOT NULL,
    energy_mint           text NOT NULL,
    energy_decimals       smallint NOT NULL CHECK (energy_decimals = 3),
    payment_mint          text NOT NULL,
    payment_decimals      smallint NOT NULL CHECK (payment_decimals BETWEEN 0 AND 12),
    oracle                text NOT NULL,
    settlement_authority  text NOT NULL,
    payment_mint_created  boolean NOT NULL,
    created_at            timestamptz NOT NULL DEFAULT now()
);

-- Every transaction gridclear signs, committed before its first send (exactly once:
-- the same bytes are rebroadcast until they land or their blockhash expires).
CREATE TABLE ledger_attempts (
    id                       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    purpose                  text NOT NULL CHECK (purpose IN ('setup', 'grant', 'mint', 'dvp')),
    timeslot_id              bigint REFERENCES timeslots (id),
    signature                text NOT NULL UNIQUE,
    raw                      bytea NOT NULL,
    blockhash                text NOT NULL,
    last_valid_block_height  bigint NOT NULL,
    state                    text NOT NULL DEFAULT 'open'
                             CHECK (state IN ('open', 'landed', 'failed', 'expired')),
    error                    text,
    sends                    integer NOT NULL DEFAULT 0,
    landed_slot              bigint,
    created_at               timestamptz NOT NULL DEFAULT now(),
    resolved_at              timestamptz
);
CREATE INDEX ledger_attempts_open_idx ON ledger_attempts (id) WHERE state = 'open';
CREATE INDEX ledger_attempts_slot_idx ON ledger_attempts (timeslot_id, id);

-- The oracle's mint of a seller's verified export in a slot: once per seller per slot.
CREATE TABLE settlement_mints (
    timeslot_id  bigint NOT NULL REFERENCES timeslots (id),
    seller_id    bigint REFERENCES users (id) ON DELETE SET NULL,
    wallet       text NOT NULL,
    energy_wh    bigint NOT NULL CHECK (energy_wh > 0),
    state        text NOT NULL DEFAULT 'pending'
                 CHECK (state IN ('pending', 'sent', 'minted', 'failed')),
    attempt_id   bigint REFERENCES ledger_attempts (id),
    reason       text,
    PRIMARY KEY (timeslot_id, wallet)
);

-- A trade's settlement: fixed once when its slot starts settling, then sent, and
-- final as `settled` (both transfers landed, or nothing to move) or `failed`.
CREATE TABLE trade_settlements (
    trade_id       bigint PRIMARY KEY REFERENCES trades (id),
    timeslot_id    bigint NOT NULL REFERENCES timeslots (id),
    seq            integer NOT NULL,
    buyer_wallet   text,
    seller_wallet  text,
    sold_wh        bigint NOT NULL CHECK (sold_wh > 0),
    delivered_wh   bigint NOT NULL CHECK (delivered_wh >= 0 AND delivered_wh <= sold_wh),
    payment        bigint NOT NULL CHECK (payment >= 0),
    state          text NOT NULL DEFAULT 'pending'
                   CHECK (state IN ('pending', 'sent', 'settled', 'failed')),
    attempt_id     bigint REFERENCES ledger_attempts (id),
    reason         text,
    settled_at     timestamptz
);
CREATE INDEX trade_settlements_slot_idx ON trade_settlements (timeslot_id, state, seq);
CREATE INDEX trade_settlements_attempt_idx ON trade_settlements (attempt_id);

-- Onboarding: the approval transaction offered to a participant's wallet, which
-- signs it; it comes back and is forwarded only if it is exactly the one offered.
CREATE TABLE approvals (
    id                       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id                  bigint REFERENCES users (id) ON DELETE SET NULL,
    wallet                   text NOT NULL,
    energy_cap               bigint NOT NULL CHECK (energy_cap >= 0),
    payment_cap              bigint NOT NULL CHECK (payment_cap >= 0),
    message                  bytea NOT NULL,
    last_valid_block_height  bigint NOT NULL,
    state                    text NOT NULL DEFAULT 'offered'
                             CHECK (state IN ('offered', 'submitted', 'landed', 'failed', 'expired')),
    signature                text UNIQUE,
    error                    text,
    created_at               timestamptz NOT NULL DEFAULT now(),
    resolved_at              timestamptz
);
CREATE INDEX approvals_user_idx ON approvals (user_id, id DESC);

-- Each reconciliation of the ledger against this database's projection.
CREATE TABLE reconciliation_runs (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at           timestamptz NOT NULL DEFAULT now(),
    clean        boolean NOT NULL,
    checked      integer NOT NULL,
    differences  jsonb NOT NULL DEFAULT '[]'::jsonb
);
CREATE INDEX reconciliation_runs_at_idx ON reconciliation_runs (at DESC);

-- Payment tokens the service itself minted to a wallet: only on a development
-- ledger, where gridclear created the payment mint (`ledger faucet`), so that
-- reconciliation can account for every payment base unit there too.
CREATE TABLE payment_grants (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    wallet      text NOT NULL,
    amount      bigint NOT NULL CHECK (amount > 0),
    attempt_id  bigint NOT NULL REFERENCES ledger_attempts (id),
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX payment_grants_wallet_idx ON payment_grants (wallet);
