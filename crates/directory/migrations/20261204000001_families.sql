-- Families (guardians): a family groups one primary guardian, any number of secondary
-- guardians (view-only) and the learners it covers. Plus the guardian invitations, the
-- 18+ attestations, the acceptance of a tenant's required policies, and parent access
-- codes that let a guardian link a learner.
--
-- Portable SQL, same rules as the initial schema: TEXT ids, BIGINT integers/times.
-- Tokens and codes are never stored in the clear: invitations only as SHA-256 hex, parent
-- access codes as SHA-256 hex (lookup) plus, when the broker has a key, sealed
-- (AES-256-GCM) so the classroom CSV can show a code again.

CREATE TABLE families (
    id                 TEXT PRIMARY KEY,
    tenant_id          TEXT NOT NULL REFERENCES tenants (id),
    name               TEXT NOT NULL,
    primary_account_id TEXT NOT NULL REFERENCES accounts (id),
    created_at         BIGINT NOT NULL,
    updated_at         BIGINT NOT NULL
);
CREATE INDEX families_tenant ON families (tenant_id, created_at);
CREATE INDEX families_primary ON families (primary_account_id);

-- Memberships. A revoked membership keeps its row (revoked_at, revoked_by) for the record;
-- a guardian invited again gets a new row. At most one live row per (family, account) and
-- one live primary per family.
CREATE TABLE family_guardians (
    id         TEXT PRIMARY KEY,
    family_id  TEXT NOT NULL REFERENCES families (id) ON DELETE CASCADE,
    account_id TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    role       TEXT NOT NULL,
    access     TEXT NOT NULL,
    added_at   BIGINT NOT NULL,
    added_by   TEXT NOT NULL,
    revoked_at BIGINT,
    revoked_by TEXT,
    CHECK (role IN ('primary', 'secondary')),
    CHECK (access IN ('full', 'view'))
);
CREATE UNIQUE INDEX family_guardians_live ON family_guardians (family_id, account_id)
    WHERE revoked_at IS NULL;
CREATE UNIQUE INDEX family_guardians_one_primary ON family_guardians (family_id)
    WHERE revoked_at IS NULL AND role = 'primary';
CREATE INDEX family_guardians_account ON family_guardians (account_id);

-- Learners a family covers; `linked_by`: sourced_id (roster) or parent_code.
CREATE TABLE family_students (
    family_id  TEXT NOT NULL REFERENCES families (id) ON DELETE CASCADE,
    account_id TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    linked_by  TEXT NOT NULL,
    linked_at  BIGINT NOT NULL,
    PRIMARY KEY (family_id, account_id),
    CHECK (linked_by IN ('sourced_id', 'parent_code'))
);
CREATE INDEX family_students_account ON family_students (account_id);

-- Invitations of secondary guardians: never expire, single use (used_at set by one
-- conditional UPDATE), revoked when the primary changes.
CREATE TABLE family_invitations (
    token_hash  TEXT PRIMARY KEY,
    family_id   TEXT NOT NULL REFERENCES families (id) ON DELETE CASCADE,
    tenant_id   TEXT NOT NULL,
    email_norm  TEXT NOT NULL,
    invited_by  TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    used_at     BIGINT,
    used_by     TEXT,
    revoked_at  BIGINT
);
CREATE INDEX family_invitations_family ON family_invitations (family_id, created_at);

-- "I am 18 or older", once per account, with when and from where.
CREATE TABLE guardian_attestations (
    account_id  TEXT PRIMARY KEY REFERENCES accounts (id) ON DELETE CASCADE,
    attested_at BIGINT NOT NULL,
    ip          TEXT
);

-- A primary guardian's acceptance of one version of a tenant policy for a family.
CREATE TABLE family_policy_acceptances (
    family_id   TEXT NOT NULL REFERENCES families (id) ON DELETE CASCADE,
    account_id  TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    policy      TEXT NOT NULL,
    version     TEXT NOT NULL,
    accepted_at BIGINT NOT NULL,
    PRIMARY KEY (family_id, account_id, policy, version)
);

-- Parent access codes: one live code per learner (a new one replaces the old), single use
-- (used_at set by one conditional UPDATE), expiring.
CREATE TABLE parent_access_codes (
    code_hash  TEXT PRIMARY KEY,
    tenant_id  TEXT NOT NULL REFERENCES tenants (id),
    account_id TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    code_enc   TEXT,
    created_at BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at    BIGINT,
    used_by    TEXT,
    revoked_at BIGINT
);
CREATE INDEX parent_access_codes_account ON parent_access_codes (account_id, created_at);
