//! Upstream provider records. The directory stores a provider's kind-specific `config`
//! as JSON text without interpreting it (the `providers` crate validates it).

use crate::codec::{col, col_flag, col_json, flag, to_json};
use crate::error::{DirectoryError, db};
use crate::{Directory, ProviderRecord};
use homeroom_core::{ProviderId, TenantId};
use sqlx::any::AnyRow;

fn provider_from_row(row: &AnyRow) -> Result<ProviderRecord, DirectoryError> {
    Ok(ProviderRecord {
        id: ProviderId::new(col::<String>(row, "id")?),
        tenant: TenantId::new(col::<String>(row, "tenant_id")?),
        kind: col(row, "kind")?,
        display_name: col(row, "display_name")?,
        enabled: col_flag(row, "enabled")?,
        config: col_json(row, "config")?,
    })
}

impl Directory {
    /// Creates or replaces a provider (by id). Its tenant must exist
    /// ([`DirectoryError::NotFound`] otherwise). Idempotent.
    pub async fn upsert_provider(&self, provider: &ProviderRecord) -> Result<(), DirectoryError> {
        sqlx::query(
            "INSERT INTO providers (id, tenant_id, kind, display_name, enabled, config)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (id) DO UPDATE SET
                tenant_id = excluded.tenant_id,
                kind = excluded.kind,
                display_name = excluded.display_name,
                enabled = excluded.enabled,
                config = excluded.config",
        )
        .bind(provider.id.as_str())
        .bind(provider.tenant.as_str())
        .bind(&provider.kind)
        .bind(&provider.display_name)
        .bind(flag(provider.enabled))
        .bind(to_json(&provider.config)?)
        .execute(&self.pool)
        .await
        .map_err(|e| {
            DirectoryError::from_sqlx(e, || {
                format!("provider {} (tenant {})", provider.id, provider.tenant)
            })
        })?;
        Ok(())
    }

    /// The provider with this id.
    pub async fn get_provider(
        &self,
        id: &ProviderId,
    ) -> Result<Option<ProviderRecord>, DirectoryError> {
        let row = sqlx::query("SELECT * FROM providers WHERE id = $1")
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        row.as_ref().map(provider_from_row).transpose()
    }

    /// The providers of one tenant, or of all tenants; ordered by tenant then id.
    pub async fn list_providers(
        &self,
        tenant: Option<&TenantId>,
    ) -> Result<Vec<ProviderRecord>, DirectoryError> {
        let rows = match tenant {
            Some(t) => {
                sqlx::query("SELECT * FROM providers WHERE tenant_id = $1 ORDER BY id")
                    .bind(t.as_str())
                    .fetch_all(&self.pool)
                    .await
            }
            None => {
                sqlx::query("SELECT * FROM providers ORDER BY tenant_id, id")
                    .fetch_all(&self.pool)
                    .await
            }
        }
        .map_err(db)?;
        rows.iter().map(provider_from_row).collect()
    }
}
