-- Address lookup tables for settlement (DESIGN §9, docs/SETTLEMENT.md "Exactly once"):
-- with one, a delivery-versus-payment transaction names each token account in one
-- byte instead of 32, and carries up to 14 trades instead of 5. gridclear's
-- settlement authority owns the tables; which address went into which table is
-- recorded with the transaction that puts it there, before that transaction is sent
-- (the same record-before-send discipline as every other transaction).

ALTER TABLE ledger_attempts DROP CONSTRAINT ledger_attempts_purpose_check;
ALTER TABLE ledger_attempts ADD CONSTRAINT ledger_attempts_purpose_check
    CHECK (purpose IN ('setup', 'grant', 'mint', 'dvp', 'lookup'));

-- A table, created by the attempt `attempt_id` (purpose 'lookup'). It is usable once
-- that attempt landed; if it failed or expired, the row goes with its entries.
CREATE TABLE lookup_tables (
    address      text PRIMARY KEY,
    authority    text NOT NULL,
    recent_slot  bigint NOT NULL,
    attempt_id   bigint NOT NULL REFERENCES ledger_attempts (id),
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX lookup_tables_attempt_idx ON lookup_tables (attempt_id);

-- An address put into a table by the extension `attempt_id`: an address is in one
-- table at most. Its position is the ledger's to say (extensions append in the
-- order they land), so it is read from the table's account, not kept here. An
-- entry whose extension failed or expired is deleted, and the address placed again.
CREATE TABLE lookup_table_entries (
    address       text PRIMARY KEY,
    lookup_table  text NOT NULL REFERENCES lookup_tables (address),
    attempt_id    bigint NOT NULL REFERENCES ledger_attempts (id)
);
CREATE INDEX lookup_table_entries_table_idx ON lookup_table_entries (lookup_table);
CREATE INDEX lookup_table_entries_attempt_idx ON lookup_table_entries (attempt_id);
