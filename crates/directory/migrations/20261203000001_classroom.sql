-- Classroom sign-in codes: a class code per rostered class (the first half of a code
-- sign-in) and one encrypted sign-in code per learner account.
--
-- Portable SQL, same rules as the initial schema. `code_enc` is the sign-in code sealed
-- by the broker (AES-256-GCM, key from configuration, fresh nonce): base64 of nonce ||
-- ciphertext. The directory never sees a code in the clear. `failed_attempts` and
-- `last_failed_at` drive the code lockout, changed only by single atomic UPDATEs.

CREATE TABLE classroom_classes (
    tenant_id        TEXT NOT NULL REFERENCES tenants (id),
    class_sourced_id TEXT NOT NULL,
    class_code       TEXT NOT NULL,
    created_at       BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, class_sourced_id)
);
CREATE UNIQUE INDEX classroom_classes_code ON classroom_classes (class_code);

CREATE TABLE classroom_codes (
    account_id      TEXT PRIMARY KEY REFERENCES accounts (id) ON DELETE CASCADE,
    tenant_id       TEXT NOT NULL REFERENCES tenants (id),
    code_enc        TEXT NOT NULL,
    set_at          BIGINT NOT NULL,
    set_by          TEXT NOT NULL,
    failed_attempts BIGINT NOT NULL DEFAULT 0,
    last_failed_at  BIGINT,
    last_failed_ip  TEXT
);
CREATE INDEX classroom_codes_tenant ON classroom_codes (tenant_id);
