-- Identity: users, their wallets, sessions (refresh-token families), API keys, audit log.

CREATE TABLE users (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email          text,
    password_hash  text,
    display_name   text,
    role           text NOT NULL DEFAULT 'participant'
                   CHECK (role IN ('admin', 'operator', 'participant')),
    disabled       boolean NOT NULL DEFAULT false,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    CHECK (email IS NULL OR email = lower(email)),
    CHECK ((email IS NULL) = (password_hash IS NULL))
);
CREATE UNIQUE INDEX users_email_key ON users (email) WHERE email IS NOT NULL;

-- A Solana wallet (base58 Ed25519 public key) belongs to at most one user.
CREATE TABLE wallets (
    address    text PRIMARY KEY CHECK (length(address) BETWEEN 32 AND 44),
    user_id    bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    linked_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX wallets_user_idx ON wallets (user_id);

-- One row per refresh token. A family is one sign-in; every rotation adds a row to
-- it. Presenting a token that was already used revokes the whole family.
CREATE TABLE refresh_tokens (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    family_id    uuid NOT NULL,
    user_id      bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token_hash   bytea NOT NULL UNIQUE,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,
    used_at      timestamptz,
    revoked_at   timestamptz
);
CREATE INDEX refresh_tokens_family_idx ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_user_idx ON refresh_tokens (user_id);

CREATE TABLE api_keys (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id       bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name          text NOT NULL,
    prefix        text NOT NULL UNIQUE,
    key_hash      bytea NOT NULL,
    scopes        text[] NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz,
    last_used_at  timestamptz,
    revoked_at    timestamptz
);
CREATE INDEX api_keys_user_idx ON api_keys (user_id);

CREATE TABLE audit_log (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    event       text NOT NULL,
    outcome     text NOT NULL CHECK (outcome IN ('success', 'failure')),
    actor_id    bigint REFERENCES users (id) ON DELETE SET NULL,
    subject     text,
    ip          text,
    request_id  text,
    details     jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX audit_log_at_idx ON audit_log (at DESC);
CREATE INDEX audit_log_event_at_idx ON audit_log (event, at DESC);
CREATE INDEX audit_log_actor_at_idx ON audit_log (actor_id, at DESC);
