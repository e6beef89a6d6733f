-- Local (password) accounts: credentials, invitations, password resets, per-tenant
-- lockout policy, and the mail outbox.
--
-- Portable SQL, same rules as the initial schema: TEXT ids, BIGINT integers/times/0-1
-- booleans. Tokens are never stored: only their SHA-256 (hex).

-- One row per account that may sign in with a Homeroom password. `password_hash` is an
-- argon2id PHC string, NULL while an invitation is pending. `failed_attempts` and
-- `last_failed_at` drive the lockout; they are changed only by single atomic UPDATEs so
-- every instance counts the same attempts.
CREATE TABLE local_credentials (
    account_id      TEXT PRIMARY KEY REFERENCES accounts (id) ON DELETE CASCADE,
    tenant_id       TEXT NOT NULL REFERENCES tenants (id),
    password_hash   TEXT,
    password_set_at BIGINT,
    failed_attempts BIGINT NOT NULL DEFAULT 0,
    last_failed_at  BIGINT,
    -- Where the last counted attempt came from (every attempt's address is in the audit log).
    last_failed_ip  TEXT,
    created_at      BIGINT NOT NULL
);
CREATE INDEX local_credentials_tenant ON local_credentials (tenant_id);

-- Sign-in by username looks accounts up case-insensitively.
CREATE INDEX accounts_tenant_username_lower ON accounts (tenant_id, LOWER(username));

-- Invitation links: they never expire; the first use sets the password and marks every
-- invitation of the account used.
CREATE TABLE local_invitations (
    token_hash TEXT PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    tenant_id  TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    used_at    BIGINT
);
CREATE INDEX local_invitations_account ON local_invitations (account_id, created_at);

-- Password-reset links: valid until `expires_at`, single use. A newer link for the same
-- account revokes the older ones.
CREATE TABLE local_resets (
    token_hash   TEXT PRIMARY KEY,
    account_id   TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    tenant_id    TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    requested_by TEXT NOT NULL,
    used_at      BIGINT,
    revoked_at   BIGINT
);
CREATE INDEX local_resets_account ON local_resets (account_id, created_at);

-- Per-tenant lockout policy; a tenant without a row uses the server's defaults.
CREATE TABLE local_policies (
    tenant_id           TEXT PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
    max_failed_attempts BIGINT NOT NULL,
    lockout_secs        BIGINT NOT NULL
);

-- Mail to send (and sent): written in the same transaction as what it announces. With no
-- SMTP configured this table is the record. `status`: pending, sent, failed (gave up),
-- unsent (no mail server configured). `body` holds `[[LINK]]` where a secret link goes;
-- the link itself is in `link` only while the mail waits for delivery (never without a
-- mail server) and is erased once the mail is sent or given up, so tokens rest in the
-- directory only as hashes.
CREATE TABLE mail_outbox (
    id         TEXT PRIMARY KEY,
    tenant_id  TEXT,
    account_id TEXT,
    kind       TEXT NOT NULL,
    to_addr    TEXT NOT NULL,
    subject    TEXT NOT NULL,
    body       TEXT NOT NULL,
    link       TEXT,
    created_at BIGINT NOT NULL,
    status     TEXT NOT NULL,
    attempts   BIGINT NOT NULL DEFAULT 0,
    next_try_at BIGINT NOT NULL,
    sent_at    BIGINT,
    last_error TEXT
);
CREATE INDEX mail_outbox_status ON mail_outbox (status, next_try_at);
CREATE INDEX mail_outbox_account ON mail_outbox (account_id, created_at);
