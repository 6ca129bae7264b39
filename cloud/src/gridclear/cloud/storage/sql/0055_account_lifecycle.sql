-- Account lifecycle: verified emails, single-use account links (email verification,
-- password reset), deleted (pseudonymised) accounts, and audit searches by subject.

-- When the account's current email was proven by a link sent to it (NULL: not yet).
ALTER TABLE users ADD COLUMN email_verified_at timestamptz;
-- A deleted account keeps its row (and id) as the pseudonym that settled trades and
-- the audit log still name; everything that identified the person is removed.
ALTER TABLE users ADD COLUMN deleted_at timestamptz;
ALTER TABLE users ADD CONSTRAINT users_deleted_is_disabled
    CHECK (deleted_at IS NULL OR (disabled AND email IS NULL AND display_name IS NULL));

-- A link mailed to an account: only the SHA-256 of its token is stored. It works once
-- (used_at) and until expires_at; a newer link of the same purpose voids older ones.
CREATE TABLE account_tokens (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id     bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    purpose     text NOT NULL CHECK (purpose IN ('verify_email', 'reset_password')),
    token_hash  bytea NOT NULL UNIQUE,
    -- The address the link was sent to: verifying proves this one, not a later one.
    email       text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz,
    CHECK (created_at < expires_at)
);
CREATE INDEX account_tokens_user_idx ON account_tokens (user_id, purpose)
    WHERE used_at IS NULL;

CREATE INDEX audit_log_subject_idx ON audit_log (subject, id DESC) WHERE subject IS NOT NULL;
CREATE INDEX audit_log_actor_id_idx ON audit_log (actor_id, id DESC);
