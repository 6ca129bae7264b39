-- Devices: sites, gateways, their Ed25519 keys, one-time enrolment tokens, meters,
-- and the last status each gateway reported.

CREATE TABLE sites (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        text NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 200),
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- A gateway. `device_id` is the {device_id} of its MQTT topics and of its payloads
-- (the rule of gridclear.shared.topics); `id` is what other tables reference.
CREATE TABLE devices (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    device_id   text NOT NULL UNIQUE CHECK (device_id ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$'),
    name        text,
    site_id     bigint REFERENCES sites (id) ON DELETE SET NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    created_by  bigint REFERENCES users (id) ON DELETE SET NULL
);

-- A device's public keys. The kid is the RFC 7638 thumbprint of the key, so one key
-- can never belong to two devices. A message is accepted when its signing time lies in
-- [valid_from, valid_until) and before revoked_at (NULL bounds are open).
CREATE TABLE device_keys (
    kid             text PRIMARY KEY,
    device_pk       bigint NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    public_key      bytea NOT NULL CHECK (length(public_key) = 32),
    valid_from      timestamptz,
    valid_until     timestamptz,
    revoked_at      timestamptz,
    revoked_reason  text,
    source          text NOT NULL CHECK (source IN ('enrolment', 'operator')),
    created_at      timestamptz NOT NULL DEFAULT now(),
    CHECK (valid_until IS NULL OR valid_from IS NULL OR valid_until > valid_from)
);
CREATE INDEX device_keys_device_idx ON device_keys (device_pk);

-- One-time enrolment tokens: only their SHA-256 is kept.
CREATE TABLE enrolment_tokens (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    device_pk   bigint NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    token_hash  bytea NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz,
    used_kid    text
);
CREATE INDEX enrolment_tokens_device_idx ON enrolment_tokens (device_pk);

-- Ingest workers cache every key; they reload when this number changes, which every
-- change to devices or keys bumps in the same transaction.
CREATE TABLE device_key_version (
    singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    version    bigint NOT NULL
);
INSERT INTO device_key_version (version) VALUES (1);

CREATE FUNCTION bump_device_key_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE device_key_version SET version = version + 1;
    RETURN NULL;
END
$$;
CREATE TRIGGER device_keys_changed AFTER INSERT OR UPDATE OR DELETE ON device_keys
    FOR EACH STATEMENT EXECUTE FUNCTION bump_device_key_version();
CREATE TRIGGER devices_changed AFTER UPDATE OR DELETE ON devices
    FOR EACH STATEMENT EXECUTE FUNCTION bump_device_key_version();

-- A meter behind a gateway. `name` is the meter's identity in the gateway's readings
-- (its serial when readable). Meters are created on their first reading, without an
-- owner; an operator binds them to an owner and a role.
CREATE TABLE meters (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    device_pk   bigint NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 64),
    serial      text,
    model       text,
    owner_id    bigint REFERENCES users (id) ON DELETE SET NULL,
    role        text NOT NULL DEFAULT 'import' CHECK (role IN ('import', 'export', 'both')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (device_pk, name)
);
CREATE INDEX meters_owner_idx ON meters (owner_id) WHERE owner_id IS NOT NULL;

-- The newest status message of each gateway (topic .../status, retained).
CREATE TABLE device_status (
    device_pk         bigint PRIMARY KEY REFERENCES devices (id) ON DELETE CASCADE,
    state             text NOT NULL CHECK (state IN ('online', 'offline')),
    reported_at       timestamptz NOT NULL,
    received_at       timestamptz NOT NULL DEFAULT now(),
    agent             text,
    kid               text,
    last_seq          bigint,
    outbox_depth      bigint,
    oldest_unsent_at  timestamptz,
    thinned_readings  bigint,
    meters_failing    text[]
);
