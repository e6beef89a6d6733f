-- Homeroom directory, initial schema.
--
-- Portable SQL: runs unchanged on SQLite (>= 3.24) and PostgreSQL (>= 12).
-- Ids are TEXT; integers, times and booleans (0/1) are BIGINT; lists and JSON are TEXT.
-- No AUTOINCREMENT/SERIAL: every id is chosen by the application.

-- Districts (or schools).
CREATE TABLE tenants (
    id                    TEXT PRIMARY KEY,
    name                  TEXT NOT NULL,
    -- JSON array of lower-case domains, in configured order (source of truth for reads).
    domains               TEXT NOT NULL,
    session_idle_secs     BIGINT NOT NULL,
    session_absolute_secs BIGINT NOT NULL,
    session_warning_secs  BIGINT NOT NULL
);

-- One row per (lower-case) email domain: the index for home-realm discovery. A domain
-- belongs to at most one tenant.
CREATE TABLE tenant_domains (
    domain    TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE
);
CREATE INDEX tenant_domains_tenant ON tenant_domains (tenant_id);

-- Upstream identity providers.
CREATE TABLE providers (
    id           TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL REFERENCES tenants (id),
    kind         TEXT NOT NULL,
    display_name TEXT NOT NULL,
    enabled      BIGINT NOT NULL,
    -- Kind-specific settings, JSON.
    config       TEXT NOT NULL
);
CREATE INDEX providers_tenant ON providers (tenant_id, id);

-- Downstream apps (OAuth clients). List columns are JSON arrays.
CREATE TABLE apps (
    client_id                  TEXT PRIMARY KEY,
    tenant_id                  TEXT NOT NULL REFERENCES tenants (id),
    name                       TEXT NOT NULL,
    secret_hash                TEXT,
    token_endpoint_auth_method TEXT NOT NULL,
    redirect_uris              TEXT NOT NULL,
    post_logout_redirect_uris  TEXT NOT NULL,
    allowed_scopes             TEXT NOT NULL,
    id_token_alg               TEXT NOT NULL,
    enabled                    BIGINT NOT NULL,
    initiate_login_uri         TEXT,
    start_url                  TEXT,
    allowed_origins            TEXT NOT NULL
);
CREATE INDEX apps_tenant ON apps (tenant_id, client_id);

-- Homeroom accounts. `email_norm` is trim(lower(email)), kept in its own column so the
-- lookup is an index seek on both databases.
CREATE TABLE accounts (
    id              TEXT PRIMARY KEY,
    tenant_id       TEXT NOT NULL REFERENCES tenants (id),
    status          TEXT NOT NULL,
    email           TEXT,
    email_norm      TEXT,
    email_verified  BIGINT NOT NULL,
    name            TEXT,
    given_name      TEXT,
    family_name     TEXT,
    username        TEXT,
    -- JSON array of role names.
    roles           TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    last_sign_in_at BIGINT,
    sign_in_count   BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX accounts_tenant_email ON accounts (tenant_id, email_norm);

-- "This upstream subject is this account."
CREATE TABLE provider_links (
    provider_id TEXT NOT NULL,
    subject     TEXT NOT NULL,
    account_id  TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    email       TEXT,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (provider_id, subject)
);
CREATE INDEX provider_links_account ON provider_links (account_id, created_at);

-- Token signing keys.
CREATE TABLE signing_keys (
    kid         TEXT PRIMARY KEY,
    alg         TEXT NOT NULL,
    private_pem TEXT NOT NULL,
    -- Public JWK, JSON.
    public_jwk  TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    status      TEXT NOT NULL
);
CREATE INDEX signing_keys_created ON signing_keys (created_at, kid);

-- Audit events: one per step of a login attempt or admin change. No foreign keys on
-- purpose: an event must be writable even when what it mentions is gone or never existed.
CREATE TABLE audit_events (
    id          TEXT PRIMARY KEY,
    ref_id      TEXT,
    at_ms       BIGINT NOT NULL,
    tenant_id   TEXT,
    kind        TEXT NOT NULL,
    code        TEXT,
    provider_id TEXT,
    client_id   TEXT,
    account_id  TEXT,
    -- Free-form facts, JSON.
    detail      TEXT NOT NULL
);
CREATE INDEX audit_events_ref      ON audit_events (ref_id, at_ms);
CREATE INDEX audit_events_at       ON audit_events (at_ms);
CREATE INDEX audit_events_tenant   ON audit_events (tenant_id, at_ms);
CREATE INDEX audit_events_code     ON audit_events (code, at_ms);
CREATE INDEX audit_events_kind     ON audit_events (kind, at_ms);
CREATE INDEX audit_events_provider ON audit_events (provider_id, at_ms);
CREATE INDEX audit_events_client   ON audit_events (client_id, at_ms);
CREATE INDEX audit_events_account  ON audit_events (account_id, at_ms);
