-- The keys service's own tables: tenants and their plan, dashboard users and sessions, API key
-- metadata (the bcrypt hashes live in Vault at api_keys/{tenant_id}/{key_id}) and key usage.

-- migrate:up
CREATE TABLE tenants (
    id              text PRIMARY KEY,
    name            text        NOT NULL,
    plan            text        NOT NULL CHECK (plan IN ('starter', 'pro', 'enterprise')),
    created_at      timestamptz NOT NULL DEFAULT now(),
    plan_changed_at timestamptz
);

CREATE TABLE users (
    id            text PRIMARY KEY,
    tenant_id     text        NOT NULL REFERENCES tenants (id),
    email         text        NOT NULL,
    password_hash text        NOT NULL,          -- bcrypt of the user's password
    role          text        NOT NULL DEFAULT 'owner' CHECK (role IN ('owner', 'admin', 'member')),
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX users_email_idx ON users (lower(email));
CREATE INDEX users_tenant_idx ON users (tenant_id);

-- One row per dashboard login; the refresh token is stored as its SHA-256 only.
CREATE TABLE sessions (
    id                    text PRIMARY KEY,
    user_id               text        NOT NULL REFERENCES users (id),
    tenant_id             text        NOT NULL REFERENCES tenants (id),
    refresh_hash          bytea       NOT NULL UNIQUE,
    previous_refresh_hash bytea,                 -- the rotated-out token: presenting it again = theft
    created_at            timestamptz NOT NULL DEFAULT now(),
    refreshed_at          timestamptz,
    expires_at            timestamptz NOT NULL,
    revoked_at            timestamptz
);
CREATE INDEX sessions_previous_idx ON sessions (previous_refresh_hash)
    WHERE previous_refresh_hash IS NOT NULL;

-- Metadata only: no secret and no hash of one (those are in Vault).
CREATE TABLE api_keys (
    id                   text PRIMARY KEY,
    tenant_id            text        NOT NULL REFERENCES tenants (id),
    name                 text        NOT NULL,
    mode                 text        NOT NULL CHECK (mode IN ('live', 'test')),
    lookup_id            text        NOT NULL UNIQUE,
    last4                text        NOT NULL,
    scopes               text[]      NOT NULL,
    created_by           text        NOT NULL,
    created_at           timestamptz NOT NULL DEFAULT now(),
    expires_at           timestamptz,
    revoked_at           timestamptz,
    regenerated_at       timestamptz,
    previous_lookup_id   text UNIQUE,            -- the secret replaced by the last regenerate
    previous_valid_until timestamptz,            -- its grace period end (null: none)
    request_count        bigint      NOT NULL DEFAULT 0,
    error_count          bigint      NOT NULL DEFAULT 0,
    last_used_at         timestamptz
);
CREATE INDEX api_keys_tenant_idx ON api_keys (tenant_id, created_at DESC, id DESC);

-- Per-minute usage of a key, for charts; filled in batches from Redis.
CREATE TABLE api_key_usage (
    key_id    text        NOT NULL REFERENCES api_keys (id),
    tenant_id text        NOT NULL,
    minute    timestamptz NOT NULL,
    requests  bigint      NOT NULL DEFAULT 0,
    errors    bigint      NOT NULL DEFAULT 0,
    PRIMARY KEY (key_id, minute)
);

-- Which Redis usage batches are already in Postgres, so a flusher that dies between the
-- commit and the Redis clean-up never counts a batch twice.
CREATE TABLE usage_flushes (
    batch_id   text PRIMARY KEY,
    flushed_at timestamptz NOT NULL DEFAULT now()
);

-- migrate:down
DROP TABLE usage_flushes;
DROP TABLE api_key_usage;
DROP TABLE api_keys;
DROP TABLE sessions;
DROP TABLE users;
DROP TABLE tenants;
