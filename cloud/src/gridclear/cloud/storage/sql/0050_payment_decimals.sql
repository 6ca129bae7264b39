-- The payment token's decimals: how many base units make one token. Prices are
-- stored and cleared in base units per kWh (DESIGN §6); apps written for the
-- Express predecessor send a decimal number of tokens per kWh, which the API
-- converts exactly with this (docs/MIGRATING.md). Settlement keeps it equal to the
-- payment mint's decimals (6 for USDC, the default).
ALTER TABLE market_config
    ADD COLUMN IF NOT EXISTS payment_decimals smallint NOT NULL DEFAULT 6
    CHECK (payment_decimals BETWEEN 0 AND 12);
