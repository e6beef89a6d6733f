//! Tenants (districts) and their email domains. Domains are kept twice: as a JSON list on
//! the tenant row (configured order, what readers get back) and one row per domain in
//! `tenant_domains` (the index for home-realm discovery, unique across tenants).

use crate::codec::{col, col_json, normalise_email, to_json};
use crate::error::{DirectoryError, db};
use crate::{Directory, Tenant};
use homeroom_core::TenantId;
use sqlx::any::AnyRow;

fn tenant_from_row(row: &AnyRow) -> Result<Tenant, DirectoryError> {
    Ok(Tenant {
        id: TenantId::new(col::<String>(row, "id")?),
        name: col(row, "name")?,
        domains: col_json(row, "domains")?,
        session_idle_secs: col(row, "session_idle_secs")?,
        session_absolute_secs: col(row, "session_absolute_secs")?,
        session_warning_secs: col(row, "session_warning_secs")?,
    })
}

impl Directory {
    /// Creates or replaces a tenant (by id), including its domain list. Domains are
    /// normalised (trimmed, lower case) and de-duplicated. A domain already claimed by
    /// another tenant is a [`DirectoryError::Conflict`] and nothing is written.
    /// Idempotent: upserting the same tenant twice leaves the same rows.
    pub async fn upsert_tenant(&self, tenant: &Tenant) -> Result<(), DirectoryError> {
        let mut domains: Vec<String> = Vec::with_capacity(tenant.domains.len());
        for d in &tenant.domains {
            let d = normalise_email(d.trim_start_matches('@'));
            if !d.is_empty() && !domains.contains(&d) {
                domains.push(d);
            }
        }
        let domains_json = to_json(&domains)?;
        let mut tx = self.pool.begin().await.map_err(db)?;
        sqlx::query(
            "INSERT INTO tenants (id, name, domains, session_idle_secs, session_absolute_secs, session_warning_secs)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (id) DO UPDATE SET
                name = excluded.name,
                domains = excluded.domains,
                session_idle_secs = excluded.session_idle_secs,
                session_absolute_secs = excluded.session_absolute_secs,
                session_warning_secs = excluded.session_warning_secs",
        )
        .bind(tenant.id.as_str())
        .bind(&tenant.name)
        .bind(&domains_json)
        .bind(tenant.session_idle_secs)
        .bind(tenant.session_absolute_secs)
        .bind(tenant.session_warning_secs)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        sqlx::query("DELETE FROM tenant_domains WHERE tenant_id = $1")
            .bind(tenant.id.as_str())
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        for domain in &domains {
            sqlx::query("INSERT INTO tenant_domains (domain, tenant_id) VALUES ($1, $2)")
                .bind(domain)
                .bind(tenant.id.as_str())
                .execute(&mut *tx)
                .await
                .map_err(|e| {
                    DirectoryError::from_sqlx(e, || {
                        format!("domain {domain} belongs to another tenant")
                    })
                })?;
        }
        tx.commit().await.map_err(db)
    }

    /// The tenant with this id.
    pub async fn get_tenant(&self, id: &TenantId) -> Result<Option<Tenant>, DirectoryError> {
        let row = sqlx::query("SELECT * FROM tenants WHERE id = $1")
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        row.as_ref().map(tenant_from_row).transpose()
    }

    /// Every tenant, by id.
    pub async fn list_tenants(&self) -> Result<Vec<Tenant>, DirectoryError> {
        let rows = sqlx::query("SELECT * FROM tenants ORDER BY id")
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        rows.iter().map(tenant_from_row).collect()
    }

    /// The tenant owning an email domain (case-insensitive; a leading `@` is ignored).
    pub async fn tenant_by_domain(&self, domain: &str) -> Result<Option<Tenant>, DirectoryError> {
        let domain = normalise_email(domain.trim().trim_start_matches('@'));
        let row = sqlx::query(
            "SELECT t.* FROM tenants t JOIN tenant_domains d ON d.tenant_id = t.id WHERE d.domain = $1",
        )
        .bind(&domain)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        row.as_ref().map(tenant_from_row).transpose()
    }
}
