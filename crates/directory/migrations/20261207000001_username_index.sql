-- The username index led with tenant_id, so a tenant-only prefix of it matched the email
-- lookup (tenant_id, email_norm) too. While accounts was still small (a new school's first
-- morning, before autovacuum analyses it) PostgreSQL planned first sign-ins on it and read
-- every account of the tenant per lookup (the surge benchmark measured ~750 rows read per
-- sign-in at 2,000 accounts). Led by the username, it serves only username sign-ins, and
-- the email lookup has one index that fits.
DROP INDEX accounts_tenant_username_lower;
CREATE INDEX accounts_username_lower_tenant ON accounts (LOWER(username), tenant_id);
