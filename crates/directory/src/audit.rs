//! Audit events: batch insert, the trace of one attempt (by reference id) and filtered
//! listing for the admin console. Writing from the hot path goes through
//! [`crate::AuditWriter`], which batches into [`Directory::insert_audit_events`].

use crate::codec::{col, col_json, to_json};
use crate::error::{DirectoryError, db};
use crate::{AuditEvent, AuditFilter, Directory};
use homeroom_core::{AccountId, ClientId, ProviderId, RefId, TenantId};
use sqlx::any::AnyRow;

/// `list_audit` limit when the filter says 0 (or less).
pub const AUDIT_DEFAULT_LIMIT: i64 = 100;
/// Largest `list_audit` page.
pub const AUDIT_MAX_LIMIT: i64 = 1000;
/// Rows per multi-row INSERT (10 parameters each, far below SQLite's and PostgreSQL's limits).
const INSERT_CHUNK: usize = 64;
const COLUMNS: usize = 10;

fn event_from_row(row: &AnyRow) -> Result<AuditEvent, DirectoryError> {
    Ok(AuditEvent {
        id: col(row, "id")?,
        ref_id: col::<Option<String>>(row, "ref_id")?.map(RefId::new),
        at_ms: col(row, "at_ms")?,
        tenant: col::<Option<String>>(row, "tenant_id")?.map(TenantId::new),
        kind: col(row, "kind")?,
        code: col(row, "code")?,
        provider: col::<Option<String>>(row, "provider_id")?.map(ProviderId::new),
        client: col::<Option<String>>(row, "client_id")?.map(ClientId::new),
        account: col::<Option<String>>(row, "account_id")?.map(AccountId::new),
        detail: col_json(row, "detail")?,
    })
}

/// `INSERT ... VALUES ($1..$10), ($11..$20), ... ON CONFLICT (id) DO NOTHING` for `rows` rows.
fn insert_sql(rows: usize) -> String {
    let mut sql = String::from(
        "INSERT INTO audit_events (id, ref_id, at_ms, tenant_id, kind, code, provider_id, client_id, account_id, detail) VALUES ",
    );
    for r in 0..rows {
        if r > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for c in 0..COLUMNS {
            if c > 0 {
                sql.push_str(", ");
            }
            sql.push('$');
            sql.push_str(&(r * COLUMNS + c + 1).to_string());
        }
        sql.push(')');
    }
    sql.push_str(" ON CONFLICT (id) DO NOTHING");
    sql
}

/// A value bound into a dynamically built query.
enum Param {
    Text(String),
    Int(i64),
}

impl Directory {
    /// Writes events in one transaction (all or none). Events whose id is already stored
    /// are skipped, so retrying a batch is harmless.
    pub async fn insert_audit_events(&self, events: &[AuditEvent]) -> Result<(), DirectoryError> {
        if events.is_empty() {
            return Ok(());
        }
        let details = events
            .iter()
            .map(|e| to_json(&e.detail))
            .collect::<Result<Vec<_>, _>>()?;
        let mut tx = self.pool.begin().await.map_err(db)?;
        for (chunk, chunk_details) in events
            .chunks(INSERT_CHUNK)
            .zip(details.chunks(INSERT_CHUNK))
        {
            let mut query = sqlx::query(sqlx::AssertSqlSafe(insert_sql(chunk.len())));
            for (e, detail) in chunk.iter().zip(chunk_details) {
                query = query
                    .bind(e.id.clone())
                    .bind(e.ref_id.as_ref().map(|r| r.as_str().to_owned()))
                    .bind(e.at_ms)
                    .bind(e.tenant.as_ref().map(|t| t.as_str().to_owned()))
                    .bind(e.kind.clone())
                    .bind(e.code.clone())
                    .bind(e.provider.as_ref().map(|p| p.as_str().to_owned()))
                    .bind(e.client.as_ref().map(|c| c.as_str().to_owned()))
                    .bind(e.account.as_ref().map(|a| a.as_str().to_owned()))
                    .bind(detail.clone());
            }
            query.execute(&mut *tx).await.map_err(db)?;
        }
        tx.commit().await.map_err(db)
    }

    /// Every event of one attempt, oldest first: the troubleshooter's trace.
    pub async fn audit_for_ref(&self, ref_id: &RefId) -> Result<Vec<AuditEvent>, DirectoryError> {
        let rows = sqlx::query("SELECT * FROM audit_events WHERE ref_id = $1 ORDER BY at_ms, id")
            .bind(ref_id.as_str())
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        rows.iter().map(event_from_row).collect()
    }

    /// Events matching every given filter, newest first. `limit` <= 0 means
    /// [`AUDIT_DEFAULT_LIMIT`]; it is capped at [`AUDIT_MAX_LIMIT`].
    pub async fn list_audit(
        &self,
        filter: &AuditFilter,
    ) -> Result<Vec<AuditEvent>, DirectoryError> {
        let mut sql = String::from("SELECT * FROM audit_events WHERE 1 = 1");
        let mut params: Vec<Param> = Vec::new();
        let mut text = |column: &str, value: Option<&str>, sql: &mut String| {
            if let Some(v) = value {
                params.push(Param::Text(v.to_owned()));
                sql.push_str(&format!(" AND {column} = ${}", params.len()));
            }
        };
        text(
            "tenant_id",
            filter.tenant.as_ref().map(|t| t.as_str()),
            &mut sql,
        );
        text("code", filter.code.as_deref(), &mut sql);
        text("kind", filter.kind.as_deref(), &mut sql);
        text(
            "provider_id",
            filter.provider.as_ref().map(|p| p.as_str()),
            &mut sql,
        );
        text(
            "client_id",
            filter.client.as_ref().map(|c| c.as_str()),
            &mut sql,
        );
        text(
            "account_id",
            filter.account.as_ref().map(|a| a.as_str()),
            &mut sql,
        );
        if let Some(since) = filter.since_ms {
            params.push(Param::Int(since));
            sql.push_str(&format!(" AND at_ms >= ${}", params.len()));
        }
        if let Some(until) = filter.until_ms {
            params.push(Param::Int(until));
            sql.push_str(&format!(" AND at_ms <= ${}", params.len()));
        }
        let limit = if filter.limit <= 0 {
            AUDIT_DEFAULT_LIMIT
        } else {
            filter.limit.min(AUDIT_MAX_LIMIT)
        };
        params.push(Param::Int(limit));
        sql.push_str(&format!(
            " ORDER BY at_ms DESC, id DESC LIMIT ${}",
            params.len()
        ));

        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for p in params {
            query = match p {
                Param::Text(s) => query.bind(s),
                Param::Int(i) => query.bind(i),
            };
        }
        let rows = query.fetch_all(&self.pool).await.map_err(db)?;
        rows.iter().map(event_from_row).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_sql_numbers_placeholders() {
        let sql = insert_sql(2);
        assert!(sql.contains("($1, $2, $3, $4, $5, $6, $7, $8, $9, $10), ($11,"));
        assert!(sql.ends_with("$20) ON CONFLICT (id) DO NOTHING"));
    }
}
