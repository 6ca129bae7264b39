-- Market: its configuration, delivery slots, orders (bids and offers), trades.
-- Money is integer base units of the payment token, prices base units per kWh,
-- energy integer Wh (DESIGN §6).

-- One row: the market's rules. Changes apply to slots created afterwards and to
-- orders placed afterwards; a slot keeps the times it was created with.
CREATE TABLE market_config (
    singleton            boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    slot_length_s        integer NOT NULL DEFAULT 900
                         CHECK (slot_length_s BETWEEN 60 AND 86400 AND 86400 % slot_length_s = 0),
    open_ahead_s         integer NOT NULL DEFAULT 86400 CHECK (open_ahead_s BETWEEN 0 AND 2592000),
    gate_closure_s       integer NOT NULL DEFAULT 300 CHECK (gate_closure_s BETWEEN 0 AND 86400),
    settlement_grace_s   integer NOT NULL DEFAULT 900 CHECK (settlement_grace_s BETWEEN 0 AND 604800),
    price_floor          bigint NOT NULL DEFAULT 0 CHECK (price_floor >= 0),
    price_cap            bigint NOT NULL DEFAULT 1000000 CHECK (price_cap <= 1000000000000),
    min_quantity_wh      bigint NOT NULL DEFAULT 1 CHECK (min_quantity_wh >= 1),
    max_quantity_wh      bigint NOT NULL DEFAULT 1000000 CHECK (max_quantity_wh <= 1000000000),
    quantity_step_wh     bigint NOT NULL DEFAULT 1 CHECK (quantity_step_wh >= 1),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    updated_by           bigint REFERENCES users (id) ON DELETE SET NULL,
    CHECK (price_floor <= price_cap),
    CHECK (min_quantity_wh <= max_quantity_wh)
);
INSERT INTO market_config DEFAULT VALUES;

-- A delivery slot [starts_at, ends_at). Its state moves only forward, each step an
-- `UPDATE ... WHERE state = <from>`, so two schedulers never apply one twice.
CREATE TABLE timeslots (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    starts_at     timestamptz NOT NULL UNIQUE,
    ends_at       timestamptz NOT NULL,
    opens_at      timestamptz NOT NULL,
    closes_at     timestamptz NOT NULL,
    settles_at    timestamptz NOT NULL,
    state         text NOT NULL DEFAULT 'scheduled' CHECK (state IN
                  ('scheduled', 'open', 'closed', 'cleared', 'settling', 'settled', 'cancelled')),
    price_floor   bigint NOT NULL,
    price_cap     bigint NOT NULL,
    price         bigint,
    volume_wh     bigint,
    total_amount  numeric,
    bid_count     integer,
    offer_count   integer,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    cleared_at    timestamptz,
    CHECK (starts_at < ends_at AND opens_at <= closes_at AND closes_at <= starts_at)
);
CREATE INDEX timeslots_active_idx ON timeslots (starts_at)
    WHERE state IN ('scheduled', 'open', 'closed', 'cleared', 'settling');

-- An order: a bid (side 'buy') or an offer (side 'sell', a "supply" in the API).
-- `version` starts at 1 and grows with every amendment (optimistic concurrency).
-- An Idempotency-Key is unique per user; its body's SHA-256 tells a retry apart
-- from a different request reusing the key.
CREATE TABLE orders (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    timeslot_id      bigint NOT NULL REFERENCES timeslots (id),
    user_id          bigint NOT NULL REFERENCES users (id),
    meter_id         bigint NOT NULL REFERENCES meters (id),
    side             text NOT NULL CHECK (side IN ('buy', 'sell')),
    quantity_wh      bigint NOT NULL CHECK (quantity_wh > 0),
    price            bigint NOT NULL CHECK (price >= 0),
    status           text NOT NULL DEFAULT 'active' CHECK (status IN
                     ('active', 'cancelled', 'filled', 'partially_filled', 'unfilled')),
    version          integer NOT NULL DEFAULT 1,
    filled_wh        bigint NOT NULL DEFAULT 0,
    amount           bigint NOT NULL DEFAULT 0,
    idempotency_key  text,
    request_hash     bytea,
    created_at       timestamptz NOT NULL DEFAULT now(),
    submitted_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX orders_timeslot_idx ON orders (timeslot_id, side) WHERE status = 'active';
CREATE INDEX orders_slot_all_idx ON orders (timeslot_id, side, id);
CREATE INDEX orders_user_idx ON orders (user_id, side, id DESC);
CREATE UNIQUE INDEX orders_idempotency_key ON orders (user_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

-- A bilateral trade of a cleared slot, at the slot's one price.
CREATE TABLE trades (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    timeslot_id    bigint NOT NULL REFERENCES timeslots (id),
    seq            integer NOT NULL,
    buy_order_id   bigint NOT NULL REFERENCES orders (id),
    sell_order_id  bigint NOT NULL REFERENCES orders (id),
    buyer_id       bigint NOT NULL REFERENCES users (id),
    seller_id      bigint NOT NULL REFERENCES users (id),
    quantity_wh    bigint NOT NULL CHECK (quantity_wh > 0),
    price          bigint NOT NULL,
    amount         bigint NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (timeslot_id, seq)
);
CREATE INDEX trades_buyer_idx ON trades (buyer_id, id DESC);
CREATE INDEX trades_seller_idx ON trades (seller_id, id DESC);
