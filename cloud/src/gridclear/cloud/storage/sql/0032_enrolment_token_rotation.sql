-- Enrolment tokens: a token replaces the device's earlier unused ones (revoked_at), and only
-- a token the operator issued as a rotation may enrol a device that already has a current key.
ALTER TABLE enrolment_tokens
    ADD COLUMN revoked_at timestamptz,
    ADD COLUMN rotation   boolean NOT NULL DEFAULT false;
