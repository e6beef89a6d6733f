//! Downstream apps (OAuth clients). List fields are stored as JSON text.

use crate::codec::{col, col_flag, col_json, flag, to_json};
use crate::error::{DirectoryError, db};
use crate::{AppRecord, Directory};
use homeroom_core::{ClientId, TenantId};
use sqlx::any::AnyRow;

fn app_from_row(row: &AnyRow) -> Result<AppRecord, DirectoryError> {
    Ok(AppRecord {
        client_id: ClientId::new(col::<String>(row, "client_id")?),
        tenant: TenantId::new(col::<String>(row, "tenant_id")?),
        name: col(row, "name")?,
        secret_hash: col(row, "secret_hash")?,
        token_endpoint_auth_method: col(row, "token_endpoint_auth_method")?,
        redirect_uris: col_json(row, "redirect_uris")?,
        post_logout_redirect_uris: col_json(row, "post_logout_redirect_uris")?,
        allowed_scopes: col_json(row, "allowed_scopes")?,
        id_token_alg: col(row, "id_token_alg")?,
        enabled: col_flag(row, "enabled")?,
        initiate_login_uri: col(row, "initiate_login_uri")?,
        start_url: col(row, "start_url")?,
        allowed_origins: col_json(row, "allowed_origins")?,
    })
}

impl Directory {
    /// Creates or replaces an app (by client id). Its tenant must exist
    /// ([`DirectoryError::NotFound`] otherwise). Idempotent.
    pub async fn upsert_app(&self, app: &AppRecord) -> Result<(), DirectoryError> {
        sqlx::query(
            "INSERT INTO apps (client_id, tenant_id, name, secret_hash, token_endpoint_auth_method,
                redirect_uris, post_logout_redirect_uris, allowed_scopes, id_token_alg, enabled,
                initiate_login_uri, start_url, allowed_origins)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
             ON CONFLICT (client_id) DO UPDATE SET
                tenant_id = excluded.tenant_id,
                name = excluded.name,
                secret_hash = excluded.secret_hash,
                token_endpoint_auth_method = excluded.token_endpoint_auth_method,
                redirect_uris = excluded.redirect_uris,
                post_logout_redirect_uris = excluded.post_logout_redirect_uris,
                allowed_scopes = excluded.allowed_scopes,
                id_token_alg = excluded.id_token_alg,
                enabled = excluded.enabled,
                initiate_login_uri = excluded.initiate_login_uri,
                start_url = excluded.start_url,
                allowed_origins = excluded.allowed_origins",
        )
        .bind(app.client_id.as_str())
        .bind(app.tenant.as_str())
        .bind(&app.name)
        .bind(app.secret_hash.as_deref())
        .bind(&app.token_endpoint_auth_method)
        .bind(to_json(&app.redirect_uris)?)
        .bind(to_json(&app.post_logout_redirect_uris)?)
        .bind(to_json(&app.allowed_scopes)?)
        .bind(&app.id_token_alg)
        .bind(flag(app.enabled))
        .bind(app.initiate_login_uri.as_deref())
        .bind(app.start_url.as_deref())
        .bind(to_json(&app.allowed_origins)?)
        .execute(&self.pool)
        .await
        .map_err(|e| {
            DirectoryError::from_sqlx(e, || {
                format!("app {} (tenant {})", app.client_id, app.tenant)
            })
        })?;
        Ok(())
    }

    /// The app with this client id.
    pub async fn get_app(&self, client_id: &ClientId) -> Result<Option<AppRecord>, DirectoryError> {
        let row = sqlx::query("SELECT * FROM apps WHERE client_id = $1")
            .bind(client_id.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        row.as_ref().map(app_from_row).transpose()
    }

    /// The apps of one tenant, or of all tenants; ordered by tenant then client id.
    pub async fn list_apps(
        &self,
        tenant: Option<&TenantId>,
    ) -> Result<Vec<AppRecord>, DirectoryError> {
        let rows = match tenant {
            Some(t) => {
                sqlx::query("SELECT * FROM apps WHERE tenant_id = $1 ORDER BY client_id")
                    .bind(t.as_str())
                    .fetch_all(&self.pool)
                    .await
            }
            None => {
                sqlx::query("SELECT * FROM apps ORDER BY tenant_id, client_id")
                    .fetch_all(&self.pool)
                    .await
            }
        }
        .map_err(db)?;
        rows.iter().map(app_from_row).collect()
    }
}
