-- OneRoster data, per tenant, kept beside (never inside) the accounts it maps to.
--
-- Portable SQL, same rules as the initial schema: TEXT ids, BIGINT integers/times/0-1
-- booleans, JSON lists in TEXT. Roster ids (sourcedIds) are opaque, case-sensitive
-- strings, unique per tenant and kind. `extra` keeps the `metadata.*` / `ext_*` columns
-- of the row as a JSON object. `date_last_modified` is Unix seconds (NULL when blank).

CREATE TABLE roster_orgs (
    tenant_id          TEXT NOT NULL REFERENCES tenants (id),
    sourced_id         TEXT NOT NULL,
    name               TEXT NOT NULL,
    org_type           TEXT NOT NULL,
    identifier         TEXT,
    parent_sourced_id  TEXT,
    date_last_modified BIGINT,
    extra              TEXT NOT NULL,
    PRIMARY KEY (tenant_id, sourced_id)
);

-- One row per roster person ever seen. `status` is `active` or `removed` (tobedeleted,
-- or absent from a bulk users file); removed rows are kept so sign-in can explain why.
-- `account_id` is the Homeroom account the roster drives. `roles` are Homeroom role
-- names (JSON) derived from the 1.1 `role` column or the 1.2 roles file; `org_sourced_ids`
-- likewise. `account_status_set` is the account status the roster last wrote: an account
-- whose status differs was changed by someone else and is not re-activated by the roster.
CREATE TABLE roster_users (
    tenant_id              TEXT NOT NULL REFERENCES tenants (id),
    sourced_id             TEXT NOT NULL,
    account_id             TEXT REFERENCES accounts (id) ON DELETE SET NULL,
    status                 TEXT NOT NULL,
    enabled                BIGINT NOT NULL,
    username               TEXT NOT NULL,
    email                  TEXT,
    email_norm             TEXT,
    given_name             TEXT NOT NULL,
    family_name            TEXT NOT NULL,
    middle_name            TEXT,
    preferred_given_name   TEXT,
    preferred_family_name  TEXT,
    identifier             TEXT,
    user_master_identifier TEXT,
    role_1p1               TEXT,
    roles                  TEXT NOT NULL,
    org_sourced_ids        TEXT NOT NULL,
    primary_org_sourced_id TEXT,
    grades                 TEXT NOT NULL,
    user_ids               TEXT NOT NULL,
    agent_sourced_ids      TEXT NOT NULL,
    date_last_modified     BIGINT,
    account_status_set     TEXT,
    removed_at             BIGINT,
    removed_by_import      TEXT,
    extra                  TEXT NOT NULL,
    PRIMARY KEY (tenant_id, sourced_id)
);
CREATE UNIQUE INDEX roster_users_account ON roster_users (account_id);
CREATE INDEX roster_users_email ON roster_users (tenant_id, email_norm);

-- 1.2 roles.csv: one row per (user, org, role).
CREATE TABLE roster_roles (
    tenant_id          TEXT NOT NULL REFERENCES tenants (id),
    sourced_id         TEXT NOT NULL,
    user_sourced_id    TEXT NOT NULL,
    role_type          TEXT NOT NULL,
    role               TEXT NOT NULL,
    org_sourced_id     TEXT NOT NULL,
    begin_date         TEXT,
    end_date           TEXT,
    user_profile       TEXT,
    date_last_modified BIGINT,
    extra              TEXT NOT NULL,
    PRIMARY KEY (tenant_id, sourced_id)
);
CREATE INDEX roster_roles_user ON roster_roles (tenant_id, user_sourced_id);

CREATE TABLE roster_classes (
    tenant_id          TEXT NOT NULL REFERENCES tenants (id),
    sourced_id         TEXT NOT NULL,
    title              TEXT NOT NULL,
    class_code         TEXT,
    class_type         TEXT NOT NULL,
    location           TEXT,
    school_sourced_id  TEXT NOT NULL,
    course_sourced_id  TEXT,
    term_sourced_ids   TEXT NOT NULL,
    grades             TEXT NOT NULL,
    subjects           TEXT NOT NULL,
    subject_codes      TEXT NOT NULL,
    periods            TEXT NOT NULL,
    date_last_modified BIGINT,
    extra              TEXT NOT NULL,
    PRIMARY KEY (tenant_id, sourced_id)
);

CREATE TABLE roster_enrollments (
    tenant_id          TEXT NOT NULL REFERENCES tenants (id),
    sourced_id         TEXT NOT NULL,
    class_sourced_id   TEXT NOT NULL,
    school_sourced_id  TEXT NOT NULL,
    user_sourced_id    TEXT NOT NULL,
    role               TEXT NOT NULL,
    is_primary         BIGINT,
    begin_date         TEXT,
    end_date           TEXT,
    date_last_modified BIGINT,
    extra              TEXT NOT NULL,
    PRIMARY KEY (tenant_id, sourced_id)
);
CREATE INDEX roster_enrollments_user ON roster_enrollments (tenant_id, user_sourced_id);
CREATE INDEX roster_enrollments_class ON roster_enrollments (tenant_id, class_sourced_id);

-- One row per import attempt that got as far as reading the package (dry runs are not
-- recorded). `status` is `ok` or `failed`; `report` is the full report, JSON.
CREATE TABLE roster_imports (
    id                TEXT PRIMARY KEY,
    tenant_id         TEXT NOT NULL REFERENCES tenants (id),
    started_at        BIGINT NOT NULL,
    finished_at       BIGINT NOT NULL,
    mode              TEXT NOT NULL,
    oneroster_version TEXT,
    status            TEXT NOT NULL,
    users_bulk        BIGINT NOT NULL,
    added             BIGINT NOT NULL,
    updated           BIGINT NOT NULL,
    deactivated       BIGINT NOT NULL,
    conflicts         BIGINT NOT NULL,
    errors            BIGINT NOT NULL,
    report            TEXT NOT NULL
);
CREATE INDEX roster_imports_tenant ON roster_imports (tenant_id, finished_at);
