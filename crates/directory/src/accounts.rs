//! Accounts and their provider links. A link is unique on `(provider, subject)`; creating
//! an account with its first link is atomic (one statement on PostgreSQL, one transaction
//! on SQLite), so a duplicate link leaves no orphan account behind. Emails are looked up by their normalised form (`email_norm`).

use crate::codec::{col, col_flag, col_json, flag, normalise_email, to_json};
use crate::error::{DirectoryError, db};
use crate::{Account, AccountStatus, Directory, ProviderLink};
use homeroom_core::{AccountId, ProviderId, TenantId};
use sqlx::any::AnyRow;

fn account_from_row(row: &AnyRow) -> Result<Account, DirectoryError> {
    let status: String = col(row, "status")?;
    Ok(Account {
        id: AccountId::new(col::<String>(row, "id")?),
        tenant: TenantId::new(col::<String>(row, "tenant_id")?),
        status: AccountStatus::parse(&status)
            .ok_or_else(|| DirectoryError::Corrupt(format!("unknown account status {status:?}")))?,
        email: col(row, "email")?,
        email_verified: col_flag(row, "email_verified")?,
        name: col(row, "name")?,
        given_name: col(row, "given_name")?,
        family_name: col(row, "family_name")?,
        username: col(row, "username")?,
        roles: col_json(row, "roles")?,
        created_at: col(row, "created_at")?,
        last_sign_in_at: col(row, "last_sign_in_at")?,
        sign_in_count: col(row, "sign_in_count")?,
    })
}

fn link_from_row(row: &AnyRow) -> Result<ProviderLink, DirectoryError> {
    Ok(ProviderLink {
        account: AccountId::new(col::<String>(row, "account_id")?),
        provider: ProviderId::new(col::<String>(row, "provider_id")?),
        subject: col(row, "subject")?,
        email: col(row, "email")?,
        created_at: col(row, "created_at")?,
    })
}

fn link_conflict(link: &ProviderLink) -> impl FnOnce() -> String + '_ {
    move || {
        format!(
            "provider link {}/{} already exists",
            link.provider, link.subject
        )
    }
}

async fn insert_link<'e, E>(exec: E, link: &ProviderLink) -> Result<(), DirectoryError>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    sqlx::query(
        "INSERT INTO provider_links (provider_id, subject, account_id, email, created_at)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(link.provider.as_str())
    .bind(&link.subject)
    .bind(link.account.as_str())
    .bind(link.email.as_deref())
    .bind(link.created_at)
    .execute(exec)
    .await
    .map_err(|e| DirectoryError::from_sqlx(e, link_conflict(link)))?;
    Ok(())
}

type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>;

/// Binds an account's 14 columns, in `accounts` column order, as `$1`..`$14`.
fn bind_account<'q>(q: AnyQuery<'q>, account: &'q Account) -> Result<AnyQuery<'q>, DirectoryError> {
    Ok(q.bind(account.id.as_str())
        .bind(account.tenant.as_str())
        .bind(account.status.as_str())
        .bind(account.email.as_deref())
        .bind(account.email.as_deref().map(normalise_email))
        .bind(flag(account.email_verified))
        .bind(account.name.as_deref())
        .bind(account.given_name.as_deref())
        .bind(account.family_name.as_deref())
        .bind(account.username.as_deref())
        .bind(to_json(&account.roles)?)
        .bind(account.created_at)
        .bind(account.last_sign_in_at)
        .bind(account.sign_in_count))
}

/// Inserts an account row (in the caller's transaction). A duplicate id is a
/// [`DirectoryError::Conflict`].
pub(crate) async fn insert_account<'e, E>(exec: E, account: &Account) -> Result<(), DirectoryError>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    bind_account(
        sqlx::query(
            "INSERT INTO accounts (id, tenant_id, status, email, email_norm, email_verified, name,
                given_name, family_name, username, roles, created_at, last_sign_in_at, sign_in_count)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
        ),
        account,
    )?
        .execute(exec)
        .await
        .map_err(|e| DirectoryError::from_sqlx(e, || format!("account {} (tenant {})", account.id, account.tenant)))?;
    Ok(())
}

impl Directory {
    /// Creates an account and, optionally, its first provider link, atomically.
    /// An existing account id or an already-linked `(provider, subject)` is a
    /// [`DirectoryError::Conflict`] and nothing is written. The link's `account` must be
    /// the new account's id ([`DirectoryError::Invalid`] otherwise); its tenant must exist.
    pub async fn create_account(
        &self,
        account: &Account,
        link: Option<&ProviderLink>,
    ) -> Result<(), DirectoryError> {
        if let Some(link) = link
            && link.account != account.id
        {
            return Err(DirectoryError::Invalid(format!(
                "link for account {} passed with account {}",
                link.account, account.id
            )));
        }
        match (link, self.backend()) {
            // A first sign-in on PostgreSQL: one statement inserts both rows (atomic as any
            // statement is), one round trip instead of BEGIN, two INSERTs and COMMIT.
            // SQLite has no INSERT inside WITH, so it takes the transaction below.
            (Some(link), crate::Backend::Postgres) => {
                let what = || {
                    format!(
                        "account {} or provider link {}/{}",
                        account.id, link.provider, link.subject
                    )
                };
                bind_account(
                    sqlx::query(
                        "WITH a AS (
                            INSERT INTO accounts (id, tenant_id, status, email, email_norm,
                                email_verified, name, given_name, family_name, username, roles,
                                created_at, last_sign_in_at, sign_in_count)
                            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
                            RETURNING id)
                         INSERT INTO provider_links (provider_id, subject, account_id, email, created_at)
                         SELECT $15, $16, a.id, $17, $18 FROM a",
                    ),
                    account,
                )?
                .bind(link.provider.as_str())
                .bind(&link.subject)
                .bind(link.email.as_deref())
                .bind(link.created_at)
                .execute(&self.pool)
                .await
                .map_err(|e| DirectoryError::from_sqlx(e, what))?;
                Ok(())
            }
            (None, _) => insert_account(&self.pool, account).await,
            (Some(link), crate::Backend::Sqlite) => {
                let mut tx = self.pool.begin().await.map_err(db)?;
                insert_account(&mut *tx, account).await?;
                insert_link(&mut *tx, link).await?;
                tx.commit().await.map_err(db)
            }
        }
    }

    /// The account with this id.
    pub async fn get_account(&self, id: &AccountId) -> Result<Option<Account>, DirectoryError> {
        let row = sqlx::query("SELECT * FROM accounts WHERE id = $1")
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        row.as_ref().map(account_from_row).transpose()
    }

    /// The account linked to this upstream subject.
    pub async fn find_account_by_link(
        &self,
        provider: &ProviderId,
        subject: &str,
    ) -> Result<Option<Account>, DirectoryError> {
        let row = sqlx::query(
            "SELECT a.* FROM accounts a JOIN provider_links l ON l.account_id = a.id
             WHERE l.provider_id = $1 AND l.subject = $2",
        )
        .bind(provider.as_str())
        .bind(subject)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        row.as_ref().map(account_from_row).transpose()
    }

    /// The accounts of a tenant with this email (trimmed, case-insensitive), oldest first.
    /// Several accounts may share an address; the caller decides what that means.
    pub async fn find_accounts_by_email(
        &self,
        tenant: &TenantId,
        email: &str,
    ) -> Result<Vec<Account>, DirectoryError> {
        // One index fits (tenant_id, email_norm): see migration 20261207000001.
        let rows = sqlx::query("SELECT * FROM accounts WHERE tenant_id = $1 AND email_norm = $2 ORDER BY created_at, id")
            .bind(tenant.as_str())
            .bind(normalise_email(email))
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        rows.iter().map(account_from_row).collect()
    }

    /// Accounts of a tenant whose name, email or username contains `query` (case
    /// insensitive; at least 3 characters), optionally with a role; newest sign-in first.
    pub async fn search_accounts(
        &self,
        tenant: &TenantId,
        query: &str,
        role: Option<homeroom_core::Role>,
        limit: i64,
    ) -> Result<Vec<Account>, DirectoryError> {
        let q = query.trim().to_lowercase();
        if q.chars().count() < 3 {
            return Err(DirectoryError::Invalid(
                "search needs at least 3 characters".into(),
            ));
        }
        let escaped: String = q
            .chars()
            .flat_map(|c| {
                if matches!(c, '%' | '_' | '\\') {
                    vec!['\\', c]
                } else {
                    vec![c]
                }
            })
            .collect();
        let pattern = format!("%{escaped}%");
        let rows = sqlx::query(
            "SELECT * FROM accounts WHERE tenant_id = $1 AND (LOWER(COALESCE(name, '')) LIKE $2 ESCAPE '\\' OR COALESCE(email_norm, '') LIKE $2 ESCAPE '\\' OR LOWER(COALESCE(username, '')) LIKE $2 ESCAPE '\\') ORDER BY COALESCE(last_sign_in_at, 0) DESC, id LIMIT $3",
        )
        .bind(tenant.as_str())
        .bind(pattern)
        .bind(limit.clamp(1, 200) * 4)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        let mut out: Vec<Account> = rows
            .iter()
            .map(account_from_row)
            .collect::<Result<_, _>>()?;
        if let Some(r) = role {
            out.retain(|a| a.roles.contains(&r));
        }
        out.truncate(usize::try_from(limit.clamp(1, 200)).unwrap_or(50));
        Ok(out)
    }

    /// Accounts of a tenant whose email, with its dots removed, starts with `stem` (the
    /// dot-less local part of an address): candidates for "the same address up to dots,
    /// `+tag` or domain alias", which the caller compares exactly. At most `limit`.
    pub async fn accounts_by_email_stem(
        &self,
        tenant: &TenantId,
        stem: &str,
        limit: i64,
    ) -> Result<Vec<Account>, DirectoryError> {
        let stem = normalise_email(stem).replace('.', "");
        if stem.is_empty() || stem.contains('@') {
            return Ok(Vec::new());
        }
        let escaped: String = stem
            .chars()
            .flat_map(|c| {
                if matches!(c, '%' | '_' | '\\') {
                    vec!['\\', c]
                } else {
                    vec![c]
                }
            })
            .collect();
        let rows = sqlx::query(
            "SELECT * FROM accounts WHERE tenant_id = $1 AND REPLACE(COALESCE(email_norm, ''), '.', '') LIKE $2 ESCAPE '\\' ORDER BY created_at, id LIMIT $3",
        )
        .bind(tenant.as_str())
        .bind(format!("{escaped}%"))
        .bind(limit.clamp(1, 500))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter().map(account_from_row).collect()
    }

    /// Links an upstream subject to an existing account. [`DirectoryError::Conflict`] when
    /// that `(provider, subject)` is linked already (to any account);
    /// [`DirectoryError::NotFound`] when the account does not exist.
    pub async fn add_link(&self, link: &ProviderLink) -> Result<(), DirectoryError> {
        insert_link(&self.pool, link).await
    }

    /// The links of an account, oldest first.
    pub async fn links_for_account(
        &self,
        account: &AccountId,
    ) -> Result<Vec<ProviderLink>, DirectoryError> {
        let rows = sqlx::query(
            "SELECT * FROM provider_links WHERE account_id = $1 ORDER BY created_at, provider_id, subject",
        )
        .bind(account.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter().map(link_from_row).collect()
    }

    /// Counts a successful sign-in: `sign_in_count += 1` in one atomic statement, and
    /// `last_sign_in_at = at` unless a later sign-in was already recorded (so concurrent
    /// instances never move it backwards). [`DirectoryError::NotFound`] for an unknown id.
    pub async fn record_sign_in(&self, account: &AccountId, at: i64) -> Result<(), DirectoryError> {
        let done = sqlx::query(
            "UPDATE accounts SET
                sign_in_count = sign_in_count + 1,
                last_sign_in_at = CASE
                    WHEN last_sign_in_at IS NULL OR last_sign_in_at < $2 THEN $2
                    ELSE last_sign_in_at END
             WHERE id = $1",
        )
        .bind(account.as_str())
        .bind(at)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        if done.rows_affected() == 0 {
            return Err(DirectoryError::NotFound {
                what: format!("account {account}"),
            });
        }
        Ok(())
    }

    /// Sets an account's status. [`DirectoryError::NotFound`] for an unknown id.
    pub async fn set_account_status(
        &self,
        account: &AccountId,
        status: AccountStatus,
    ) -> Result<(), DirectoryError> {
        let done = sqlx::query("UPDATE accounts SET status = $2 WHERE id = $1")
            .bind(account.as_str())
            .bind(status.as_str())
            .execute(&self.pool)
            .await
            .map_err(db)?;
        if done.rows_affected() == 0 {
            return Err(DirectoryError::NotFound {
                what: format!("account {account}"),
            });
        }
        Ok(())
    }

    /// Creates an account (no provider link) and makes it the account of the tenant's
    /// roster person `sourced_id`, in one transaction. [`DirectoryError::Conflict`] when
    /// that roster person already has an account or does not exist; nothing is written then.
    pub async fn create_account_for_roster_user(
        &self,
        account: &Account,
        sourced_id: &str,
    ) -> Result<(), DirectoryError> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        insert_account(&mut *tx, account).await?;
        let done = sqlx::query(
            "UPDATE roster_users SET account_id = $3
             WHERE tenant_id = $1 AND sourced_id = $2 AND account_id IS NULL",
        )
        .bind(account.tenant.as_str())
        .bind(sourced_id)
        .bind(account.id.as_str())
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        if done.rows_affected() != 1 {
            return Err(DirectoryError::Conflict {
                what: format!(
                    "roster person {sourced_id} has an account already or does not exist"
                ),
            });
        }
        tx.commit().await.map_err(db)
    }

    /// Replaces an account's roles. [`DirectoryError::NotFound`] for an unknown id.
    pub async fn set_account_roles(
        &self,
        account: &AccountId,
        roles: &[homeroom_core::Role],
    ) -> Result<(), DirectoryError> {
        let done = sqlx::query("UPDATE accounts SET roles = $2 WHERE id = $1")
            .bind(account.as_str())
            .bind(to_json(&roles)?)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        if done.rows_affected() == 0 {
            return Err(DirectoryError::NotFound {
                what: format!("account {account}"),
            });
        }
        Ok(())
    }

    /// Number of accounts in a tenant, or in the whole directory.
    pub async fn count_accounts(&self, tenant: Option<&TenantId>) -> Result<i64, DirectoryError> {
        match tenant {
            Some(t) => {
                sqlx::query_scalar("SELECT COUNT(*) FROM accounts WHERE tenant_id = $1")
                    .bind(t.as_str())
                    .fetch_one(&self.pool)
                    .await
            }
            None => {
                sqlx::query_scalar("SELECT COUNT(*) FROM accounts")
                    .fetch_one(&self.pool)
                    .await
            }
        }
        .map_err(db)
    }
}
