-- Self-trade prevention (docs/MARKET.md, "Self-trade"): an account's active orders
-- in one slot are all on one side. The placement statement refuses an order that
-- would break this (SELF_TRADE); this constraint makes it hold under concurrent
-- placements too, where two transactions cannot see each other's new rows: the
-- second waits for the first and then fails, and the API places it again, now
-- seeing the first and refusing it cleanly.
--
-- An existing database where some account already holds active orders on both
-- sides of one slot refuses this migration: cancel one side first (the error
-- names the rows).
CREATE EXTENSION IF NOT EXISTS btree_gist;
ALTER TABLE orders ADD CONSTRAINT orders_one_side_per_account_and_slot
    EXCLUDE USING gist (timeslot_id WITH =, user_id WITH =, side WITH <>)
    WHERE (status = 'active');
