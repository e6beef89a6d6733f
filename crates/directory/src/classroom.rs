//! Classroom sign-in codes: class codes per rostered class, the encrypted per-learner
//! sign-in codes, their lockout counter, and the roster queries the teacher pages need
//! (a class's members, a teacher's classes, a school's learners).
//!
//! The codes arrive sealed: this module stores and returns opaque ciphertext and never
//! decides who may see or change them (the broker does). The lockout counter follows
//! [`crate::local`]: one `UPDATE ... RETURNING` claims an attempt before the code is
//! compared, so concurrent attempts on any number of instances are counted exactly.

use crate::Directory;
use crate::codec::col;
use crate::error::{DirectoryError, db};
use crate::local::{AttemptClaim, LocalPolicy};
use homeroom_core::{AccountId, TenantId};
use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;

/// A rostered class, as the teacher pages show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassroomClass {
    pub tenant: TenantId,
    pub sourced_id: String,
    pub title: String,
    pub school_sourced_id: String,
}

/// An active roster person enrolled in a class (or a learner of a school).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassMember {
    pub user_sourced_id: String,
    /// The enrollment role (`student`, `teacher`, ...).
    pub role: String,
    pub account: Option<AccountId>,
    pub username: String,
    pub given_name: String,
    pub family_name: String,
}

impl ClassMember {
    /// "Given Family".
    pub fn name(&self) -> String {
        format!("{} {}", self.given_name, self.family_name)
            .trim()
            .to_owned()
    }
}

/// A learner's stored sign-in code (sealed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredCode {
    pub account: AccountId,
    pub tenant: TenantId,
    /// The sealed code; never serialised.
    #[serde(skip_serializing)]
    pub code_enc: String,
    pub set_at: i64,
    pub set_by: String,
    pub failed_attempts: i64,
    pub last_failed_at: Option<i64>,
}

fn class_from_row(row: &AnyRow) -> Result<ClassroomClass, DirectoryError> {
    Ok(ClassroomClass {
        tenant: TenantId::new(col::<String>(row, "tenant_id")?),
        sourced_id: col(row, "sourced_id")?,
        title: col(row, "title")?,
        school_sourced_id: col(row, "school_sourced_id")?,
    })
}

fn member_from_row(row: &AnyRow) -> Result<ClassMember, DirectoryError> {
    Ok(ClassMember {
        user_sourced_id: col(row, "sourced_id")?,
        role: col(row, "role")?,
        account: col::<Option<String>>(row, "account_id")?.map(AccountId::new),
        username: col(row, "username")?,
        given_name: col(row, "given_name")?,
        family_name: col(row, "family_name")?,
    })
}

fn code_from_row(row: &AnyRow) -> Result<StoredCode, DirectoryError> {
    Ok(StoredCode {
        account: AccountId::new(col::<String>(row, "account_id")?),
        tenant: TenantId::new(col::<String>(row, "tenant_id")?),
        code_enc: col(row, "code_enc")?,
        set_at: col(row, "set_at")?,
        set_by: col(row, "set_by")?,
        failed_attempts: col(row, "failed_attempts")?,
        last_failed_at: col(row, "last_failed_at")?,
    })
}

const MEMBER_COLUMNS: &str =
    "u.sourced_id, e.role, u.account_id, u.username, u.given_name, u.family_name";

impl Directory {
    /// A rostered class of the tenant.
    pub async fn classroom_class(
        &self,
        tenant: &TenantId,
        class: &str,
    ) -> Result<Option<ClassroomClass>, DirectoryError> {
        let row = sqlx::query(
            "SELECT tenant_id, sourced_id, title, school_sourced_id FROM roster_classes
             WHERE tenant_id = $1 AND sourced_id = $2",
        )
        .bind(tenant.as_str())
        .bind(class)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        row.as_ref().map(class_from_row).transpose()
    }

    /// The classes in which this account's roster person is enrolled with `role`.
    pub async fn classes_of_account(
        &self,
        account: &AccountId,
        role: &str,
    ) -> Result<Vec<ClassroomClass>, DirectoryError> {
        let rows = sqlx::query(
            "SELECT DISTINCT c.tenant_id, c.sourced_id, c.title, c.school_sourced_id
             FROM roster_users u
             JOIN roster_enrollments e ON e.tenant_id = u.tenant_id AND e.user_sourced_id = u.sourced_id
             JOIN roster_classes c ON c.tenant_id = e.tenant_id AND c.sourced_id = e.class_sourced_id
             WHERE u.account_id = $1 AND u.status = 'active' AND e.role = $2
             ORDER BY c.title, c.sourced_id",
        )
        .bind(account.as_str())
        .bind(role)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter().map(class_from_row).collect()
    }

    /// Every rostered class of the tenant, by title.
    pub async fn classes_of_tenant(
        &self,
        tenant: &TenantId,
    ) -> Result<Vec<ClassroomClass>, DirectoryError> {
        let rows = sqlx::query(
            "SELECT tenant_id, sourced_id, title, school_sourced_id FROM roster_classes
             WHERE tenant_id = $1 ORDER BY title, sourced_id",
        )
        .bind(tenant.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter().map(class_from_row).collect()
    }

    /// The classes of a school, by title.
    pub async fn classes_of_school(
        &self,
        tenant: &TenantId,
        school: &str,
    ) -> Result<Vec<ClassroomClass>, DirectoryError> {
        let rows = sqlx::query(
            "SELECT tenant_id, sourced_id, title, school_sourced_id FROM roster_classes
             WHERE tenant_id = $1 AND school_sourced_id = $2 ORDER BY title, sourced_id",
        )
        .bind(tenant.as_str())
        .bind(school)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter().map(class_from_row).collect()
    }

    /// Active roster people enrolled in a class, by family then given name.
    pub async fn class_members(
        &self,
        tenant: &TenantId,
        class: &str,
    ) -> Result<Vec<ClassMember>, DirectoryError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {MEMBER_COLUMNS} FROM roster_enrollments e
             JOIN roster_users u ON u.tenant_id = e.tenant_id AND u.sourced_id = e.user_sourced_id
             WHERE e.tenant_id = $1 AND e.class_sourced_id = $2 AND u.status = 'active'
             ORDER BY u.family_name, u.given_name, u.sourced_id"
        )))
        .bind(tenant.as_str())
        .bind(class)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter().map(member_from_row).collect()
    }

    /// Active learners (student enrollments) of any class of a school, each once.
    pub async fn school_learners(
        &self,
        tenant: &TenantId,
        school: &str,
    ) -> Result<Vec<ClassMember>, DirectoryError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT DISTINCT {MEMBER_COLUMNS} FROM roster_enrollments e
             JOIN roster_users u ON u.tenant_id = e.tenant_id AND u.sourced_id = e.user_sourced_id
             WHERE e.tenant_id = $1 AND e.school_sourced_id = $2 AND e.role = 'student'
               AND u.status = 'active'
             ORDER BY u.family_name, u.given_name, u.sourced_id"
        )))
        .bind(tenant.as_str())
        .bind(school)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter().map(member_from_row).collect()
    }

    /// The class code of a class, if one was made.
    pub async fn class_code(
        &self,
        tenant: &TenantId,
        class: &str,
    ) -> Result<Option<String>, DirectoryError> {
        sqlx::query_scalar(
            "SELECT class_code FROM classroom_classes WHERE tenant_id = $1 AND class_sourced_id = $2",
        )
        .bind(tenant.as_str())
        .bind(class)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)
    }

    /// The class code of a class, storing `candidate` when it has none. Returns the code in
    /// force (another instance may have stored one first). A `Conflict` means `candidate`
    /// is taken by another class: try another.
    pub async fn ensure_class_code(
        &self,
        tenant: &TenantId,
        class: &str,
        candidate: &str,
        now: i64,
    ) -> Result<String, DirectoryError> {
        sqlx::query(
            "INSERT INTO classroom_classes (tenant_id, class_sourced_id, class_code, created_at)
             VALUES ($1, $2, $3, $4) ON CONFLICT (tenant_id, class_sourced_id) DO NOTHING",
        )
        .bind(tenant.as_str())
        .bind(class)
        .bind(candidate)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(|e| DirectoryError::from_sqlx(e, || format!("class code {candidate}")))?;
        self.class_code(tenant, class)
            .await?
            .ok_or_else(|| DirectoryError::NotFound {
                what: format!("class code of {class}"),
            })
    }

    /// The (tenant, class) a class code belongs to (codes are compared upper-case).
    pub async fn class_by_code(
        &self,
        code: &str,
    ) -> Result<Option<(TenantId, String)>, DirectoryError> {
        let row = sqlx::query(
            "SELECT tenant_id, class_sourced_id FROM classroom_classes WHERE class_code = $1",
        )
        .bind(code.trim().to_ascii_uppercase())
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        row.map(|r| {
            Ok((
                TenantId::new(col::<String>(&r, "tenant_id")?),
                col(&r, "class_sourced_id")?,
            ))
        })
        .transpose()
    }

    /// A learner's stored (sealed) sign-in code.
    pub async fn sign_in_code(
        &self,
        account: &AccountId,
    ) -> Result<Option<StoredCode>, DirectoryError> {
        let row = sqlx::query("SELECT * FROM classroom_codes WHERE account_id = $1")
            .bind(account.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        row.as_ref().map(code_from_row).transpose()
    }

    /// Replaces the sealed sign-in codes of these accounts, in one transaction, clears
    /// their lockout counters and revokes their live QR badges. Returns how many badges
    /// were revoked.
    pub async fn set_sign_in_codes(
        &self,
        tenant: &TenantId,
        codes: &[(AccountId, String)],
        by: &str,
        now: i64,
    ) -> Result<u64, DirectoryError> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        let mut badges_revoked = 0;
        for (account, sealed) in codes {
            badges_revoked += crate::badges::revoke_in(&mut *tx, account, by, now).await?;
            sqlx::query(
                "INSERT INTO classroom_codes (account_id, tenant_id, code_enc, set_at, set_by, failed_attempts)
                 VALUES ($1, $2, $3, $4, $5, 0)
                 ON CONFLICT (account_id) DO UPDATE SET
                    code_enc = excluded.code_enc, set_at = excluded.set_at,
                    set_by = excluded.set_by, failed_attempts = 0,
                    last_failed_at = NULL, last_failed_ip = NULL",
            )
            .bind(account.as_str())
            .bind(tenant.as_str())
            .bind(sealed)
            .bind(now)
            .bind(by)
            .execute(&mut *tx)
            .await
            .map_err(|e| DirectoryError::from_sqlx(e, || format!("sign-in code of {account}")))?;
        }
        tx.commit().await.map_err(db)?;
        Ok(badges_revoked)
    }

    /// Claims one code attempt atomically (see [`Directory::claim_password_attempt`]).
    pub async fn claim_code_attempt(
        &self,
        account: &AccountId,
        now: i64,
        ip: Option<&str>,
        policy: &LocalPolicy,
    ) -> Result<AttemptClaim, DirectoryError> {
        let stale_before = now - policy.lockout_secs;
        let count: Option<i64> = sqlx::query_scalar(
            "UPDATE classroom_codes SET
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
        match self.sign_in_code(account).await? {
            None => Ok(AttemptClaim::NoCredential),
            Some(c) => Ok(AttemptClaim::Locked {
                until: c.last_failed_at.unwrap_or(now) + policy.lockout_secs,
            }),
        }
    }

    /// A code check succeeded: the failure counter starts again.
    pub async fn code_succeeded(&self, account: &AccountId) -> Result<(), DirectoryError> {
        sqlx::query(
            "UPDATE classroom_codes SET failed_attempts = 0, last_failed_at = NULL
             WHERE account_id = $1",
        )
        .bind(account.as_str())
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }
}
