//! Local (password) accounts: credentials, the lockout counter, invitations, password
//! resets, the per-tenant lockout policy, and the mail outbox.
//!
//! What this module owns: the rows and the atomic statements that make the rules hold
//! across instances. The lockout counter is claimed *before* a password is checked, with
//! one `UPDATE ... RETURNING` that only succeeds while the account is not locked, so of
//! any number of concurrent attempts on any number of instances at most
//! `max_failed_attempts` reach the password check. Invitations and resets are claimed with
//! `UPDATE ... WHERE used_at IS NULL` inside the transaction that sets the password, so a
//! link is used exactly once. Mail is written in the same transaction as what it
//! announces. Tokens are stored only as SHA-256 hex; a mail's link rests in the outbox only
//! until it is delivered (see [`NewMail::link`]).
//!
//! It never hashes passwords, never mints tokens and never decides policy (the broker does).

use crate::codec::col;
use crate::error::{DirectoryError, db};
use crate::{Account, Directory};
use homeroom_core::{AccountId, TenantId};
use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;

/// An account's local password state (one row per account that may use a password).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalCredential {
    pub account: AccountId,
    pub tenant: TenantId,
    /// argon2id PHC string; `None` while an invitation is pending. Never shown to anyone.
    #[serde(skip_serializing)]
    pub password_hash: Option<String>,
    pub password_set_at: Option<i64>,
    /// Attempts counted since the last success (or since the window ran out).
    pub failed_attempts: i64,
    pub last_failed_at: Option<i64>,
    pub last_failed_ip: Option<String>,
    pub created_at: i64,
}

impl LocalCredential {
    /// Whether a password is set ("Password set?" for IT).
    pub fn password_set(&self) -> bool {
        self.password_hash.is_some()
    }

    /// When the lock ends, if the account is locked at `now` under `policy`.
    pub fn locked_until(&self, policy: &LocalPolicy, now: i64) -> Option<i64> {
        let last = self.last_failed_at?;
        let until = last + policy.lockout_secs;
        (self.failed_attempts >= policy.max_failed_attempts && until > now).then_some(until)
    }
}

/// Lockout policy of a tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalPolicy {
    /// Failed attempts that lock the account (10).
    pub max_failed_attempts: i64,
    /// How long after the last failure the lock lasts, seconds (3600). Failures older than
    /// this no longer count.
    pub lockout_secs: i64,
}

impl Default for LocalPolicy {
    fn default() -> Self {
        Self {
            max_failed_attempts: 10,
            lockout_secs: 3600,
        }
    }
}

/// Outcome of [`Directory::claim_password_attempt`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptClaim {
    /// The attempt may check the password; it is counted as a failure (`count` so far,
    /// including this one) until [`Directory::password_succeeded`] clears the counter.
    Claimed { count: i64 },
    /// Locked until this time; the password must not be checked.
    Locked { until: i64 },
    /// The account has no local credentials.
    NoCredential,
}

/// An invitation (the link itself is never stored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invitation {
    #[serde(skip_serializing)]
    pub token_hash: String,
    pub account: AccountId,
    pub tenant: TenantId,
    pub created_at: i64,
    pub created_by: String,
    pub used_at: Option<i64>,
}

/// A password-reset link's record (the link itself is never stored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PasswordReset {
    #[serde(skip_serializing)]
    pub token_hash: String,
    pub account: AccountId,
    pub tenant: TenantId,
    pub created_at: i64,
    pub expires_at: i64,
    /// `self` (the "Trouble signing in?" form) or the IT user who issued it.
    pub requested_by: String,
    pub used_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

impl PasswordReset {
    /// Usable at `now`: not used, not replaced by a newer link, not expired.
    pub fn usable(&self, now: i64) -> bool {
        self.used_at.is_none() && self.revoked_at.is_none() && self.expires_at > now
    }
}

/// Outcome of using an invitation or a reset link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkUse {
    /// This call used the link and set the password.
    Done,
    /// Used before (or, for a reset, replaced or expired).
    Spent,
    /// No such link.
    Unknown,
}

/// Delivery state of an outbox mail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MailStatus {
    /// Waiting for (another) delivery attempt.
    Pending,
    Sent,
    /// Delivery gave up after repeated failures.
    Failed,
    /// No mail server is configured: the outbox is the record.
    Unsent,
}

impl MailStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            MailStatus::Pending => "pending",
            MailStatus::Sent => "sent",
            MailStatus::Failed => "failed",
            MailStatus::Unsent => "unsent",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(Self::Pending),
            "sent" => Some(Self::Sent),
            "failed" => Some(Self::Failed),
            "unsent" => Some(Self::Unsent),
            _ => None,
        }
    }
}

/// Marker in a mail body where its secret link goes.
pub const LINK_MARKER: &str = "[[LINK]]";

/// A mail to write to the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMail {
    pub id: String,
    pub tenant: Option<TenantId>,
    pub account: Option<AccountId>,
    /// `invitation`, `reset`, `reset_sso` ...
    pub kind: String,
    pub to: String,
    pub subject: String,
    /// Text with [`LINK_MARKER`] where `link` goes.
    pub body: String,
    /// The secret link, kept only until delivery; `None` when no mail server is configured
    /// (status [`MailStatus::Unsent`]) or the mail has no link.
    pub link: Option<String>,
    pub status: MailStatus,
    pub created_at: i64,
}

/// A mail in the outbox (the per-user email log shows these).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxMail {
    pub id: String,
    pub tenant: Option<TenantId>,
    pub account: Option<AccountId>,
    pub kind: String,
    pub to: String,
    pub subject: String,
    /// With [`LINK_MARKER`] in place of any link.
    pub body: String,
    /// Present only while the mail waits for delivery. Never serialised.
    #[serde(skip_serializing)]
    pub link: Option<String>,
    pub status: MailStatus,
    pub attempts: i64,
    pub created_at: i64,
    pub next_try_at: i64,
    pub sent_at: Option<i64>,
    pub last_error: Option<String>,
}

fn credential_from_row(row: &AnyRow) -> Result<LocalCredential, DirectoryError> {
    Ok(LocalCredential {
        account: AccountId::new(col::<String>(row, "account_id")?),
        tenant: TenantId::new(col::<String>(row, "tenant_id")?),
        password_hash: col(row, "password_hash")?,
        password_set_at: col(row, "password_set_at")?,
        failed_attempts: col(row, "failed_attempts")?,
        last_failed_at: col(row, "last_failed_at")?,
        last_failed_ip: col(row, "last_failed_ip")?,
        created_at: col(row, "created_at")?,
    })
}

fn invitation_from_row(row: &AnyRow) -> Result<Invitation, DirectoryError> {
    Ok(Invitation {
        token_hash: col(row, "token_hash")?,
        account: AccountId::new(col::<String>(row, "account_id")?),
        tenant: TenantId::new(col::<String>(row, "tenant_id")?),
        created_at: col(row, "created_at")?,
        created_by: col(row, "created_by")?,
        used_at: col(row, "used_at")?,
    })
}

fn reset_from_row(row: &AnyRow) -> Result<PasswordReset, DirectoryError> {
    Ok(PasswordReset {
        token_hash: col(row, "token_hash")?,
        account: AccountId::new(col::<String>(row, "account_id")?),
        tenant: TenantId::new(col::<String>(row, "tenant_id")?),
        created_at: col(row, "created_at")?,
        expires_at: col(row, "expires_at")?,
        requested_by: col(row, "requested_by")?,
        used_at: col(row, "used_at")?,
        revoked_at: col(row, "revoked_at")?,
    })
}

fn mail_from_row(row: &AnyRow) -> Result<OutboxMail, DirectoryError> {
    let status: String = col(row, "status")?;
    Ok(OutboxMail {
        id: col(row, "id")?,
        tenant: col::<Option<String>>(row, "tenant_id")?.map(TenantId::new),
        account: col::<Option<String>>(row, "account_id")?.map(AccountId::new),
        kind: col(row, "kind")?,
        to: col(row, "to_addr")?,
        subject: col(row, "subject")?,
        body: col(row, "body")?,
        link: col(row, "link")?,
        status: MailStatus::parse(&status)
            .ok_or_else(|| DirectoryError::Corrupt(format!("unknown mail status {status:?}")))?,
        attempts: col(row, "attempts")?,
        created_at: col(row, "created_at")?,
        next_try_at: col(row, "next_try_at")?,
        sent_at: col(row, "sent_at")?,
        last_error: col(row, "last_error")?,
    })
}

pub(crate) async fn insert_mail<'e, E>(exec: E, m: &NewMail) -> Result<(), DirectoryError>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    sqlx::query(
        "INSERT INTO mail_outbox (id, tenant_id, account_id, kind, to_addr, subject, body, link,
            created_at, status, attempts, next_try_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 0, $9)",
    )
    .bind(&m.id)
    .bind(m.tenant.as_ref().map(|t| t.as_str().to_owned()))
    .bind(m.account.as_ref().map(|a| a.as_str().to_owned()))
    .bind(&m.kind)
    .bind(&m.to)
    .bind(&m.subject)
    .bind(&m.body)
    .bind(m.link.as_deref())
    .bind(m.created_at)
    .bind(m.status.as_str())
    .execute(exec)
    .await
    .map_err(|e| DirectoryError::from_sqlx(e, || format!("mail {}", m.id)))?;
    Ok(())
}

/// Creates the credential row (no password) when the account has none.
async fn ensure_credential<'e, E>(
    exec: E,
    account: &AccountId,
    tenant: &TenantId,
    now: i64,
) -> Result<(), DirectoryError>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    sqlx::query(
        "INSERT INTO local_credentials (account_id, tenant_id, failed_attempts, created_at)
         VALUES ($1, $2, 0, $3) ON CONFLICT (account_id) DO NOTHING",
    )
    .bind(account.as_str())
    .bind(tenant.as_str())
    .bind(now)
    .execute(exec)
    .await
    .map_err(|e| DirectoryError::from_sqlx(e, || format!("credentials of account {account}")))?;
    Ok(())
}

/// Takes the account's credential row lock (a no-op UPDATE, portable to SQLite) so every
/// transaction that touches an account's links locks in the same order: credentials
/// first, then invitation and reset rows. Without it two links of one account used at
/// once deadlock on PostgreSQL.
async fn lock_credential<'e, E>(exec: E, account: &str) -> Result<(), DirectoryError>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    sqlx::query(
        "UPDATE local_credentials SET failed_attempts = failed_attempts WHERE account_id = $1",
    )
    .bind(account)
    .execute(exec)
    .await
    .map_err(db)?;
    Ok(())
}

impl Directory {
    /// The lockout policy stored for a tenant (`None`: use the server's defaults).
    pub async fn local_policy(
        &self,
        tenant: &TenantId,
    ) -> Result<Option<LocalPolicy>, DirectoryError> {
        let row = sqlx::query("SELECT * FROM local_policies WHERE tenant_id = $1")
            .bind(tenant.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        row.map(|r| {
            Ok(LocalPolicy {
                max_failed_attempts: col(&r, "max_failed_attempts")?,
                lockout_secs: col(&r, "lockout_secs")?,
            })
        })
        .transpose()
    }

    /// Sets a tenant's lockout policy. Both numbers must be at least 1.
    pub async fn set_local_policy(
        &self,
        tenant: &TenantId,
        policy: &LocalPolicy,
    ) -> Result<(), DirectoryError> {
        if policy.max_failed_attempts < 1 || policy.lockout_secs < 1 {
            return Err(DirectoryError::Invalid(
                "lockout policy numbers must be at least 1".into(),
            ));
        }
        sqlx::query(
            "INSERT INTO local_policies (tenant_id, max_failed_attempts, lockout_secs)
             VALUES ($1, $2, $3)
             ON CONFLICT (tenant_id) DO UPDATE SET
                max_failed_attempts = excluded.max_failed_attempts,
                lockout_secs = excluded.lockout_secs",
        )
        .bind(tenant.as_str())
        .bind(policy.max_failed_attempts)
        .bind(policy.lockout_secs)
        .execute(&self.pool)
        .await
        .map_err(|e| DirectoryError::from_sqlx(e, || format!("policy of tenant {tenant}")))?;
        Ok(())
    }

    /// An account's local credentials, if it has any.
    pub async fn local_credential(
        &self,
        account: &AccountId,
    ) -> Result<Option<LocalCredential>, DirectoryError> {
        let row = sqlx::query("SELECT * FROM local_credentials WHERE account_id = $1")
            .bind(account.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        row.as_ref().map(credential_from_row).transpose()
    }

    /// Accounts of a tenant that have local credentials and whose email (normalised) or
    /// username (ASCII case-insensitive) is `login`; at most 5, oldest first.
    pub async fn find_local_accounts(
        &self,
        tenant: &TenantId,
        login: &str,
    ) -> Result<Vec<(Account, LocalCredential)>, DirectoryError> {
        let key = login.trim().to_ascii_lowercase();
        if key.is_empty() {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(
            "SELECT c.* FROM local_credentials c JOIN accounts a ON a.id = c.account_id
             WHERE a.tenant_id = $1 AND (a.email_norm = $2 OR LOWER(a.username) = $2)
             ORDER BY a.created_at, a.id LIMIT 5",
        )
        .bind(tenant.as_str())
        .bind(&key)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let cred = credential_from_row(row)?;
            if let Some(a) = self.get_account(&cred.account).await? {
                out.push((a, cred));
            }
        }
        Ok(out)
    }

    /// Claims one password attempt, atomically across instances: counts it as a failure
    /// (until [`Directory::password_succeeded`]) unless the account is locked. Failures
    /// older than the lockout window no longer count (the count restarts at 1).
    pub async fn claim_password_attempt(
        &self,
        account: &AccountId,
        now: i64,
        ip: Option<&str>,
        policy: &LocalPolicy,
    ) -> Result<AttemptClaim, DirectoryError> {
        let stale_before = now - policy.lockout_secs;
        let count: Option<i64> = sqlx::query_scalar(
            "UPDATE local_credentials SET
                failed_attempts = CASE
                    WHEN last_failed_at IS NULL OR last_failed_at <= $3 THEN 1
                    ELSE failed_attempts + 1 END,
                last_failed_at = $2,
                last_failed_ip = $5
             WHERE account_id = $1
               AND (failed_attempts < $4 OR last_failed_at IS NULL OR last_failed_at <= $3)
             RETURNING failed_attempts",
        )
        .bind(account.as_str())
        .bind(now)
        .bind(stale_before)
        .bind(policy.max_failed_attempts)
        .bind(ip)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        if let Some(count) = count {
            return Ok(AttemptClaim::Claimed { count });
        }
        match self.local_credential(account).await? {
            None => Ok(AttemptClaim::NoCredential),
            Some(c) => Ok(AttemptClaim::Locked {
                until: c.last_failed_at.unwrap_or(now) + policy.lockout_secs,
            }),
        }
    }

    /// A password check succeeded: the failure counter starts again.
    pub async fn password_succeeded(&self, account: &AccountId) -> Result<(), DirectoryError> {
        sqlx::query(
            "UPDATE local_credentials SET failed_attempts = 0, last_failed_at = NULL
             WHERE account_id = $1",
        )
        .bind(account.as_str())
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    /// Clears the lock and the failure counter (IT's "unlock"). `false` when the account
    /// has no local credentials.
    pub async fn unlock_local(&self, account: &AccountId) -> Result<bool, DirectoryError> {
        let done = sqlx::query(
            "UPDATE local_credentials SET failed_attempts = 0, last_failed_at = NULL
             WHERE account_id = $1",
        )
        .bind(account.as_str())
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(done.rows_affected() > 0)
    }

    /// Sets (replaces) an account's password hash directly, creating its credential row
    /// when missing, and clears the lock. For tools and tests; people use invitations
    /// and resets.
    pub async fn set_local_password(
        &self,
        account: &AccountId,
        tenant: &TenantId,
        password_hash: &str,
        now: i64,
    ) -> Result<(), DirectoryError> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        ensure_credential(&mut *tx, account, tenant, now).await?;
        sqlx::query(
            "UPDATE local_credentials SET password_hash = $2, password_set_at = $3,
                failed_attempts = 0, last_failed_at = NULL
             WHERE account_id = $1",
        )
        .bind(account.as_str())
        .bind(password_hash)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)
    }

    /// Records an invitation (by its token's hash) for an account, creating the account's
    /// credential row (no password yet) when missing, and writes its mail, in one
    /// transaction.
    pub async fn create_invitation(
        &self,
        invitation: &Invitation,
        mail: Option<&NewMail>,
    ) -> Result<(), DirectoryError> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        ensure_credential(
            &mut *tx,
            &invitation.account,
            &invitation.tenant,
            invitation.created_at,
        )
        .await?;
        lock_credential(&mut *tx, invitation.account.as_str()).await?;
        sqlx::query(
            "INSERT INTO local_invitations (token_hash, account_id, tenant_id, created_at, created_by, used_at)
             VALUES ($1, $2, $3, $4, $5, NULL)",
        )
        .bind(&invitation.token_hash)
        .bind(invitation.account.as_str())
        .bind(invitation.tenant.as_str())
        .bind(invitation.created_at)
        .bind(&invitation.created_by)
        .execute(&mut *tx)
        .await
        .map_err(|e| DirectoryError::from_sqlx(e, || format!("invitation of account {}", invitation.account)))?;
        if let Some(m) = mail {
            insert_mail(&mut *tx, m).await?;
        }
        tx.commit().await.map_err(db)
    }

    /// The invitation with this token hash.
    pub async fn invitation_by_hash(
        &self,
        token_hash: &str,
    ) -> Result<Option<Invitation>, DirectoryError> {
        let row = sqlx::query("SELECT * FROM local_invitations WHERE token_hash = $1")
            .bind(token_hash)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        row.as_ref().map(invitation_from_row).transpose()
    }

    /// Uses an invitation: of concurrent callers exactly one gets [`LinkUse::Done`], and
    /// its password is the one set. Every invitation of the account is then used, and an
    /// account that already has a password is never overwritten ([`LinkUse::Spent`]).
    pub async fn accept_invitation(
        &self,
        token_hash: &str,
        password_hash: &str,
        now: i64,
    ) -> Result<LinkUse, DirectoryError> {
        let Some(inv) = self.invitation_by_hash(token_hash).await? else {
            return Ok(LinkUse::Unknown);
        };
        let mut tx = self.pool.begin().await.map_err(db)?;
        lock_credential(&mut *tx, inv.account.as_str()).await?;
        let account: Option<String> = sqlx::query_scalar(
            "UPDATE local_invitations SET used_at = $2
             WHERE token_hash = $1 AND used_at IS NULL RETURNING account_id",
        )
        .bind(token_hash)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?;
        let Some(account) = account else {
            drop(tx);
            return Ok(match self.invitation_by_hash(token_hash).await? {
                Some(_) => LinkUse::Spent,
                None => LinkUse::Unknown,
            });
        };
        let set = sqlx::query(
            "UPDATE local_credentials SET password_hash = $2, password_set_at = $3,
                failed_attempts = 0, last_failed_at = NULL
             WHERE account_id = $1 AND password_hash IS NULL",
        )
        .bind(&account)
        .bind(password_hash)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        if set.rows_affected() == 0 {
            // A password exists already (set through another invitation or a reset).
            sqlx::query(
                "UPDATE local_invitations SET used_at = $2 WHERE account_id = $1 AND used_at IS NULL",
            )
            .bind(&account)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
            tx.commit().await.map_err(db)?;
            return Ok(LinkUse::Spent);
        }
        sqlx::query(
            "UPDATE local_invitations SET used_at = $2 WHERE account_id = $1 AND used_at IS NULL",
        )
        .bind(&account)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(LinkUse::Done)
    }

    /// Invitations of a tenant not used yet, for accounts without a password, oldest first.
    pub async fn pending_invitations(
        &self,
        tenant: &TenantId,
    ) -> Result<Vec<Invitation>, DirectoryError> {
        let rows = sqlx::query(
            "SELECT i.* FROM local_invitations i JOIN local_credentials c ON c.account_id = i.account_id
             WHERE i.tenant_id = $1 AND i.used_at IS NULL AND c.password_hash IS NULL
             ORDER BY i.created_at, i.token_hash",
        )
        .bind(tenant.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter().map(invitation_from_row).collect()
    }

    /// Invitations of one account, newest first.
    pub async fn invitations_for_account(
        &self,
        account: &AccountId,
    ) -> Result<Vec<Invitation>, DirectoryError> {
        let rows = sqlx::query(
            "SELECT * FROM local_invitations WHERE account_id = $1 ORDER BY created_at DESC, token_hash",
        )
        .bind(account.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter().map(invitation_from_row).collect()
    }

    /// Records a reset link (by its token's hash), revoking the account's older unused
    /// links, and writes its mail, in one transaction. The account must have credentials.
    pub async fn create_reset(
        &self,
        reset: &PasswordReset,
        mail: Option<&NewMail>,
    ) -> Result<(), DirectoryError> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        lock_credential(&mut *tx, reset.account.as_str()).await?;
        sqlx::query(
            "UPDATE local_resets SET revoked_at = $2
             WHERE account_id = $1 AND used_at IS NULL AND revoked_at IS NULL",
        )
        .bind(reset.account.as_str())
        .bind(reset.created_at)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        sqlx::query(
            "INSERT INTO local_resets (token_hash, account_id, tenant_id, created_at, expires_at, requested_by)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&reset.token_hash)
        .bind(reset.account.as_str())
        .bind(reset.tenant.as_str())
        .bind(reset.created_at)
        .bind(reset.expires_at)
        .bind(&reset.requested_by)
        .execute(&mut *tx)
        .await
        .map_err(|e| DirectoryError::from_sqlx(e, || format!("reset of account {}", reset.account)))?;
        if let Some(m) = mail {
            insert_mail(&mut *tx, m).await?;
        }
        tx.commit().await.map_err(db)
    }

    /// The reset with this token hash.
    pub async fn reset_by_hash(
        &self,
        token_hash: &str,
    ) -> Result<Option<PasswordReset>, DirectoryError> {
        let row = sqlx::query("SELECT * FROM local_resets WHERE token_hash = $1")
            .bind(token_hash)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        row.as_ref().map(reset_from_row).transpose()
    }

    /// Uses a reset link at `now`: exactly once, only while it is usable; sets the
    /// password, clears the lock and revokes the account's other links.
    pub async fn use_reset(
        &self,
        token_hash: &str,
        password_hash: &str,
        now: i64,
    ) -> Result<LinkUse, DirectoryError> {
        let Some(reset) = self.reset_by_hash(token_hash).await? else {
            return Ok(LinkUse::Unknown);
        };
        let mut tx = self.pool.begin().await.map_err(db)?;
        lock_credential(&mut *tx, reset.account.as_str()).await?;
        let account: Option<String> = sqlx::query_scalar(
            "UPDATE local_resets SET used_at = $2
             WHERE token_hash = $1 AND used_at IS NULL AND revoked_at IS NULL AND expires_at > $2
             RETURNING account_id",
        )
        .bind(token_hash)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?;
        let Some(account) = account else {
            drop(tx);
            return Ok(match self.reset_by_hash(token_hash).await? {
                Some(_) => LinkUse::Spent,
                None => LinkUse::Unknown,
            });
        };
        sqlx::query(
            "UPDATE local_credentials SET password_hash = $2, password_set_at = $3,
                failed_attempts = 0, last_failed_at = NULL
             WHERE account_id = $1",
        )
        .bind(&account)
        .bind(password_hash)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        sqlx::query(
            "UPDATE local_resets SET revoked_at = $2
             WHERE account_id = $1 AND used_at IS NULL AND revoked_at IS NULL",
        )
        .bind(&account)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        // A reset proves the mailbox as well as an invitation does.
        sqlx::query(
            "UPDATE local_invitations SET used_at = $2 WHERE account_id = $1 AND used_at IS NULL",
        )
        .bind(&account)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(LinkUse::Done)
    }

    /// Reset links of a tenant usable at `now`, oldest first.
    pub async fn pending_resets(
        &self,
        tenant: &TenantId,
        now: i64,
    ) -> Result<Vec<PasswordReset>, DirectoryError> {
        let rows = sqlx::query(
            "SELECT * FROM local_resets
             WHERE tenant_id = $1 AND used_at IS NULL AND revoked_at IS NULL AND expires_at > $2
             ORDER BY created_at, token_hash",
        )
        .bind(tenant.as_str())
        .bind(now)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter().map(reset_from_row).collect()
    }

    /// Reset links of one account, newest first.
    pub async fn resets_for_account(
        &self,
        account: &AccountId,
    ) -> Result<Vec<PasswordReset>, DirectoryError> {
        let rows = sqlx::query(
            "SELECT * FROM local_resets WHERE account_id = $1 ORDER BY created_at DESC, token_hash",
        )
        .bind(account.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter().map(reset_from_row).collect()
    }

    /// Writes a mail on its own (mail that announces nothing stored).
    pub async fn enqueue_mail(&self, mail: &NewMail) -> Result<(), DirectoryError> {
        insert_mail(&self.pool, mail).await
    }

    /// Pending mail due at `now`, oldest first (at most `limit`).
    pub async fn due_mail(&self, now: i64, limit: i64) -> Result<Vec<OutboxMail>, DirectoryError> {
        let rows = sqlx::query(
            "SELECT * FROM mail_outbox WHERE status = 'pending' AND next_try_at <= $1
             ORDER BY created_at, id LIMIT $2",
        )
        .bind(now)
        .bind(limit.clamp(1, 1000))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter().map(mail_from_row).collect()
    }

    /// Claims a due mail for one delivery attempt (atomic across instances): counts the
    /// attempt and holds the mail back for `lease_secs`. `false` when another instance
    /// claimed it first or it is no longer due.
    pub async fn claim_mail(
        &self,
        id: &str,
        now: i64,
        lease_secs: i64,
    ) -> Result<bool, DirectoryError> {
        let done = sqlx::query(
            "UPDATE mail_outbox SET attempts = attempts + 1, next_try_at = $3
             WHERE id = $1 AND status = 'pending' AND next_try_at <= $2",
        )
        .bind(id)
        .bind(now)
        .bind(now + lease_secs.max(1))
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(done.rows_affected() == 1)
    }

    /// A mail was delivered: its link is erased.
    pub async fn mail_sent(&self, id: &str, now: i64) -> Result<(), DirectoryError> {
        sqlx::query(
            "UPDATE mail_outbox SET status = 'sent', sent_at = $2, link = NULL, last_error = NULL
             WHERE id = $1",
        )
        .bind(id)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    /// A delivery attempt failed: retry at `retry_at`, or give up (`None`; the link is
    /// erased).
    pub async fn mail_failed(
        &self,
        id: &str,
        error: &str,
        retry_at: Option<i64>,
    ) -> Result<(), DirectoryError> {
        let error: String = error.chars().take(500).collect();
        match retry_at {
            Some(at) => sqlx::query(
                "UPDATE mail_outbox SET next_try_at = $2, last_error = $3 WHERE id = $1",
            )
            .bind(id)
            .bind(at)
            .bind(error),
            None => sqlx::query(
                "UPDATE mail_outbox SET status = 'failed', link = NULL, last_error = $2 WHERE id = $1",
            )
            .bind(id)
            .bind(error),
        }
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    /// The email log of one account: every mail to it, newest first (at most `limit`).
    pub async fn mail_for_account(
        &self,
        account: &AccountId,
        limit: i64,
    ) -> Result<Vec<OutboxMail>, DirectoryError> {
        let rows = sqlx::query(
            "SELECT * FROM mail_outbox WHERE account_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2",
        )
        .bind(account.as_str())
        .bind(limit.clamp(1, 1000))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter().map(mail_from_row).collect()
    }

    /// One mail by id.
    pub async fn get_mail(&self, id: &str) -> Result<Option<OutboxMail>, DirectoryError> {
        let row = sqlx::query("SELECT * FROM mail_outbox WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        row.as_ref().map(mail_from_row).transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_ends_a_window_after_the_last_failure() {
        let p = LocalPolicy::default();
        let mut c = LocalCredential {
            account: AccountId::new("a"),
            tenant: TenantId::new("t"),
            password_hash: None,
            password_set_at: None,
            failed_attempts: 9,
            last_failed_at: Some(100),
            last_failed_ip: None,
            created_at: 0,
        };
        assert_eq!(c.locked_until(&p, 100), None);
        c.failed_attempts = 10;
        assert_eq!(c.locked_until(&p, 100), Some(3700));
        assert_eq!(c.locked_until(&p, 3700), None);
        assert!(!c.password_set());
    }

    #[test]
    fn mail_status_round_trips() {
        for s in [
            MailStatus::Pending,
            MailStatus::Sent,
            MailStatus::Failed,
            MailStatus::Unsent,
        ] {
            assert_eq!(MailStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(MailStatus::parse("x"), None);
    }
}
