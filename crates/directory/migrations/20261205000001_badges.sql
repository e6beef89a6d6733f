-- Classroom QR badges: a revocable, high-entropy sign-in link per learner, printed on the
-- class sheet. Only the SHA-256 of the token is stored (hex); the link itself exists only
-- on the printed sheet. A learner has at most one live badge: issuing a new one, a new
-- sign-in code, or a revocation (per learner or per class) sets `revoked_at`.
--
-- Portable SQL, same rules as the initial schema.

CREATE TABLE classroom_badges (
    token_hash   TEXT PRIMARY KEY,
    account_id   TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    tenant_id    TEXT NOT NULL REFERENCES tenants (id),
    -- The app a badge continues to after sign-in (NULL: Homeroom's signed-in page).
    client_id    TEXT,
    created_at   BIGINT NOT NULL,
    created_by   TEXT NOT NULL,
    revoked_at   BIGINT,
    revoked_by   TEXT,
    last_used_at BIGINT,
    uses         BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX classroom_badges_account ON classroom_badges (account_id, revoked_at);
CREATE INDEX classroom_badges_tenant ON classroom_badges (tenant_id);
