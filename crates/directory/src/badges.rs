//! Classroom QR badges: per-learner sign-in links, stored only as the SHA-256 of their
//! token. This module issues, finds, marks used and revokes them; it never sees a token in
//! the clear and never decides who may do any of it (the broker does).
//!
//! A learner has at most one live badge: [`Directory::issue_badges`] revokes the learner's
//! earlier badges in the same transaction that stores the new one, and
//! [`Directory::set_sign_in_codes`] revokes them when the learner gets a new code.

use crate::Directory;
use crate::codec::col;
use crate::error::{DirectoryError, db};
use homeroom_core::{AccountId, ClientId, TenantId};
use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;

/// A stored badge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredBadge {
    /// SHA-256 (hex) of the token; never serialised.
    #[serde(skip_serializing)]
    pub token_hash: String,
    pub account: AccountId,
    pub tenant: TenantId,
    /// The app the badge continues to.
    pub client: Option<ClientId>,
    pub created_at: i64,
    pub created_by: String,
    pub revoked_at: Option<i64>,
    pub revoked_by: Option<String>,
    pub last_used_at: Option<i64>,
    pub uses: i64,
}

/// A badge to store: the learner, the token's hash, the app to continue to.
#[derive(Debug, Clone)]
pub struct NewBadge {
    pub account: AccountId,
    pub token_hash: String,
    pub client: Option<ClientId>,
}

fn badge_from_row(row: &AnyRow) -> Result<StoredBadge, DirectoryError> {
    Ok(StoredBadge {
        token_hash: col(row, "token_hash")?,
        account: AccountId::new(col::<String>(row, "account_id")?),
        tenant: TenantId::new(col::<String>(row, "tenant_id")?),
        client: col::<Option<String>>(row, "client_id")?.map(ClientId::new),
        created_at: col(row, "created_at")?,
        created_by: col(row, "created_by")?,
        revoked_at: col(row, "revoked_at")?,
        revoked_by: col(row, "revoked_by")?,
        last_used_at: col(row, "last_used_at")?,
        uses: col(row, "uses")?,
    })
}

/// Revokes the live badges of one account inside a transaction; the number revoked.
pub(crate) async fn revoke_in<'c, E>(
    exec: E,
    account: &AccountId,
    by: &str,
    now: i64,
) -> Result<u64, DirectoryError>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    let done = sqlx::query(
        "UPDATE classroom_badges SET revoked_at = $2, revoked_by = $3
         WHERE account_id = $1 AND revoked_at IS NULL",
    )
    .bind(account.as_str())
    .bind(now)
    .bind(by)
    .execute(exec)
    .await
    .map_err(db)?;
    Ok(done.rows_affected())
}

impl Directory {
    /// Stores new badges of `tenant`, revoking each learner's earlier live badges, in one
    /// transaction (all or nothing). Returns how many earlier badges were revoked.
    pub async fn issue_badges(
        &self,
        tenant: &TenantId,
        badges: &[NewBadge],
        by: &str,
        now: i64,
    ) -> Result<u64, DirectoryError> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        let mut revoked = 0;
        for b in badges {
            revoked += revoke_in(&mut *tx, &b.account, by, now).await?;
            sqlx::query(
                "INSERT INTO classroom_badges
                    (token_hash, account_id, tenant_id, client_id, created_at, created_by, uses)
                 VALUES ($1, $2, $3, $4, $5, $6, 0)",
            )
            .bind(&b.token_hash)
            .bind(b.account.as_str())
            .bind(tenant.as_str())
            .bind(b.client.as_ref().map(|c| c.as_str().to_owned()))
            .bind(now)
            .bind(by)
            .execute(&mut *tx)
            .await
            .map_err(|e| DirectoryError::from_sqlx(e, || format!("badge of {}", b.account)))?;
        }
        tx.commit().await.map_err(db)?;
        Ok(revoked)
    }

    /// A badge by the hash of its token.
    pub async fn badge_by_hash(&self, hash: &str) -> Result<Option<StoredBadge>, DirectoryError> {
        let row = sqlx::query("SELECT * FROM classroom_badges WHERE token_hash = $1")
            .bind(hash)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        row.as_ref().map(badge_from_row).transpose()
    }

    /// The learner's live badge, if any.
    pub async fn live_badge(
        &self,
        account: &AccountId,
    ) -> Result<Option<StoredBadge>, DirectoryError> {
        let row = sqlx::query(
            "SELECT * FROM classroom_badges WHERE account_id = $1 AND revoked_at IS NULL
             ORDER BY created_at DESC",
        )
        .bind(account.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        row.as_ref().map(badge_from_row).transpose()
    }

    /// Revokes the live badges of these accounts of `tenant` in one transaction; the number
    /// revoked.
    pub async fn revoke_badges(
        &self,
        tenant: &TenantId,
        accounts: &[AccountId],
        by: &str,
        now: i64,
    ) -> Result<u64, DirectoryError> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        let mut n = 0;
        for a in accounts {
            let done = sqlx::query(
                "UPDATE classroom_badges SET revoked_at = $3, revoked_by = $4
                 WHERE account_id = $1 AND tenant_id = $2 AND revoked_at IS NULL",
            )
            .bind(a.as_str())
            .bind(tenant.as_str())
            .bind(now)
            .bind(by)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
            n += done.rows_affected();
        }
        tx.commit().await.map_err(db)?;
        Ok(n)
    }

    /// Counts a use of a live badge. False when it was revoked meanwhile.
    pub async fn badge_used(&self, hash: &str, now: i64) -> Result<bool, DirectoryError> {
        let done = sqlx::query(
            "UPDATE classroom_badges SET last_used_at = $2, uses = uses + 1
             WHERE token_hash = $1 AND revoked_at IS NULL",
        )
        .bind(hash)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(done.rows_affected() == 1)
    }
}
