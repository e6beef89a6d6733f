//! Families (guardians): families, their guardians (one primary, any number of view-only
//! secondaries) and learners, guardian invitations, 18+ attestations, acceptance of a
//! tenant's required policies, and parent access codes.
//!
//! What this module owns: the rows and the atomic statements that make the family rules
//! hold across instances. Every operation that changes more than one row is one
//! transaction; every single-use thing (an invitation, a parent access code) is claimed by
//! one conditional `UPDATE ... WHERE used_at IS NULL ... RETURNING`, so of any number of
//! concurrent uses exactly one wins. Mail announcing a change is written in the same
//! transaction as the change. Tokens and codes arrive hashed (and a parent code also
//! sealed by the broker); this module never sees them in the clear.
//!
//! It never decides who may do what (the broker does): for example it offers no way to
//! add a secondary guardian other than using an invitation a primary guardian created.

use crate::accounts::insert_account;
use crate::codec::col;
use crate::error::{DirectoryError, db};
use crate::local::{NewMail, insert_mail};
use crate::{Account, Directory};
use homeroom_core::{AccountId, TenantId};
use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;

/// A guardian's place in a family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GuardianRole {
    Primary,
    Secondary,
}

impl GuardianRole {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Primary => "primary",
            Self::Secondary => "secondary",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "primary" => Some(Self::Primary),
            "secondary" => Some(Self::Secondary),
            _ => None,
        }
    }
}

/// What a guardian may do with the family's data: a primary has `full`, a secondary `view`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GuardianAccess {
    Full,
    View,
}

impl GuardianAccess {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Full => "full",
            Self::View => "view",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "full" => Some(Self::Full),
            "view" => Some(Self::View),
            _ => None,
        }
    }
}

/// A family of a tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Family {
    pub id: String,
    pub tenant: TenantId,
    pub name: String,
    pub primary: AccountId,
    pub created_at: i64,
    pub updated_at: i64,
    /// The family this one was merged into (it has no live guardians or learners then).
    #[serde(default)]
    pub merged_into: Option<String>,
}

/// A guardian's membership of a family (revoked ones are kept for the record).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Guardian {
    pub id: String,
    pub family: String,
    pub account: AccountId,
    pub role: GuardianRole,
    pub access: GuardianAccess,
    pub added_at: i64,
    pub added_by: String,
    pub revoked_at: Option<i64>,
    pub revoked_by: Option<String>,
}

/// A learner a family covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FamilyStudent {
    pub family: String,
    pub account: AccountId,
    /// `sourced_id` (roster) or `parent_code`.
    pub linked_by: String,
    pub linked_at: i64,
}

/// An invitation of a secondary guardian (the link itself is never stored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FamilyInvitation {
    #[serde(skip_serializing)]
    pub token_hash: String,
    pub family: String,
    pub tenant: TenantId,
    /// The invited address, normalised.
    pub email: String,
    /// The account of the primary guardian who invited.
    pub invited_by: AccountId,
    pub created_at: i64,
    pub used_at: Option<i64>,
    pub used_by: Option<AccountId>,
    pub revoked_at: Option<i64>,
}

impl FamilyInvitation {
    /// Not used and not revoked (invitations never expire).
    pub fn usable(&self) -> bool {
        self.used_at.is_none() && self.revoked_at.is_none()
    }
}

/// One of an account's live memberships, with its family.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    pub family: Family,
    pub guardian: Guardian,
}

/// A learner's parent access code record (the code itself is never stored in the clear).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParentCode {
    #[serde(skip_serializing)]
    pub code_hash: String,
    pub tenant: TenantId,
    pub account: AccountId,
    /// The code sealed by the broker, when it has a key; never serialised.
    #[serde(skip_serializing)]
    pub code_enc: Option<String>,
    pub created_at: i64,
    pub created_by: String,
    pub expires_at: i64,
    pub used_at: Option<i64>,
    pub used_by: Option<AccountId>,
    pub revoked_at: Option<i64>,
}

impl ParentCode {
    /// Usable at `now`: not used, not replaced, not expired.
    pub fn usable(&self, now: i64) -> bool {
        self.used_at.is_none() && self.revoked_at.is_none() && self.expires_at > now
    }
}

/// Outcome of using a family invitation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InviteUse {
    /// This call used the invitation: the account is now a view-only secondary.
    Joined { family: String },
    /// Used before (by anyone).
    Spent,
    /// Revoked (the family's primary guardian changed).
    Revoked,
    /// The account already belongs to the family; the invitation was not used.
    AlreadyMember { family: String },
    /// No such invitation.
    Unknown,
}

/// Outcome of redeeming a parent access code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodeUse {
    /// This call used the code: the learner is linked to `family` (`created`: the family
    /// was made for this guardian, who is its primary).
    Linked {
        family: String,
        learner: AccountId,
        created: bool,
    },
    /// No code of this tenant has this hash.
    Unknown,
    /// Used before, or replaced by a newer code.
    Spent,
    Expired,
    /// The guardian is in families but primary of none: only a primary links learners.
    NotPrimary,
}

fn family_from_row(row: &AnyRow) -> Result<Family, DirectoryError> {
    Ok(Family {
        id: col(row, "id")?,
        tenant: TenantId::new(col::<String>(row, "tenant_id")?),
        name: col(row, "name")?,
        primary: AccountId::new(col::<String>(row, "primary_account_id")?),
        created_at: col(row, "created_at")?,
        updated_at: col(row, "updated_at")?,
        merged_into: col(row, "merged_into")?,
    })
}

fn guardian_from_row(row: &AnyRow) -> Result<Guardian, DirectoryError> {
    let role: String = col(row, "role")?;
    let access: String = col(row, "access")?;
    Ok(Guardian {
        id: col(row, "g_id")?,
        family: col(row, "family_id")?,
        account: AccountId::new(col::<String>(row, "account_id")?),
        role: GuardianRole::parse(&role)
            .ok_or_else(|| DirectoryError::Corrupt(format!("unknown guardian role {role:?}")))?,
        access: GuardianAccess::parse(&access)
            .ok_or_else(|| DirectoryError::Corrupt(format!("unknown access {access:?}")))?,
        added_at: col(row, "added_at")?,
        added_by: col(row, "added_by")?,
        revoked_at: col(row, "revoked_at")?,
        revoked_by: col(row, "revoked_by")?,
    })
}

fn invitation_from_row(row: &AnyRow) -> Result<FamilyInvitation, DirectoryError> {
    Ok(FamilyInvitation {
        token_hash: col(row, "token_hash")?,
        family: col(row, "family_id")?,
        tenant: TenantId::new(col::<String>(row, "tenant_id")?),
        email: col(row, "email_norm")?,
        invited_by: AccountId::new(col::<String>(row, "invited_by")?),
        created_at: col(row, "created_at")?,
        used_at: col(row, "used_at")?,
        used_by: col::<Option<String>>(row, "used_by")?.map(AccountId::new),
        revoked_at: col(row, "revoked_at")?,
    })
}

fn code_from_row(row: &AnyRow) -> Result<ParentCode, DirectoryError> {
    Ok(ParentCode {
        code_hash: col(row, "code_hash")?,
        tenant: TenantId::new(col::<String>(row, "tenant_id")?),
        account: AccountId::new(col::<String>(row, "account_id")?),
        code_enc: col(row, "code_enc")?,
        created_at: col(row, "created_at")?,
        created_by: col(row, "created_by")?,
        expires_at: col(row, "expires_at")?,
        used_at: col(row, "used_at")?,
        used_by: col::<Option<String>>(row, "used_by")?.map(AccountId::new),
        revoked_at: col(row, "revoked_at")?,
    })
}

const GUARDIAN_COLUMNS: &str = "g.id AS g_id, g.family_id, g.account_id, g.role, g.access, g.added_at, g.added_by, g.revoked_at, g.revoked_by";

fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", ulid::Ulid::new().to_string().to_lowercase())
}

async fn insert_guardian<'e, E>(
    exec: E,
    family: &str,
    account: &AccountId,
    role: GuardianRole,
    by: &str,
    now: i64,
) -> Result<(), DirectoryError>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    let access = match role {
        GuardianRole::Primary => GuardianAccess::Full,
        GuardianRole::Secondary => GuardianAccess::View,
    };
    sqlx::query(
        "INSERT INTO family_guardians (id, family_id, account_id, role, access, added_at, added_by)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(new_id("fg"))
    .bind(family)
    .bind(account.as_str())
    .bind(role.as_str())
    .bind(access.as_str())
    .bind(now)
    .bind(by)
    .execute(exec)
    .await
    .map_err(|e| {
        DirectoryError::from_sqlx(e, || {
            format!("guardian {account} of family {family} (already a member)")
        })
    })?;
    Ok(())
}

async fn insert_family<'e, E>(exec: E, f: &Family) -> Result<(), DirectoryError>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    sqlx::query(
        "INSERT INTO families (id, tenant_id, name, primary_account_id, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $5)",
    )
    .bind(&f.id)
    .bind(f.tenant.as_str())
    .bind(&f.name)
    .bind(f.primary.as_str())
    .bind(f.created_at)
    .execute(exec)
    .await
    .map_err(|e| DirectoryError::from_sqlx(e, || format!("family {}", f.id)))?;
    Ok(())
}

impl Directory {
    /// Creates a family with `primary` as its primary guardian (full access), in one
    /// transaction. The primary must be an account of the family's tenant.
    pub async fn create_family(
        &self,
        tenant: &TenantId,
        name: &str,
        primary: &AccountId,
        by: &str,
        now: i64,
    ) -> Result<Family, DirectoryError> {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 200 {
            return Err(DirectoryError::Invalid(
                "a family name needs 1 to 200 characters".into(),
            ));
        }
        match self.get_account(primary).await? {
            Some(a) if &a.tenant == tenant => {}
            _ => {
                return Err(DirectoryError::NotFound {
                    what: format!("account {primary} in tenant {tenant}"),
                });
            }
        }
        let f = Family {
            id: new_id("fam"),
            tenant: tenant.clone(),
            name: name.to_owned(),
            primary: primary.clone(),
            created_at: now,
            updated_at: now,
            merged_into: None,
        };
        let mut tx = self.pool.begin().await.map_err(db)?;
        insert_family(&mut *tx, &f).await?;
        insert_guardian(&mut *tx, &f.id, primary, GuardianRole::Primary, by, now).await?;
        tx.commit().await.map_err(db)?;
        Ok(f)
    }

    /// The family with this id.
    pub async fn get_family(&self, id: &str) -> Result<Option<Family>, DirectoryError> {
        let row = sqlx::query("SELECT * FROM families WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        row.as_ref().map(family_from_row).transpose()
    }

    /// Families of a tenant, oldest first (at most `limit`, 1..=1000).
    pub async fn families_in_tenant(
        &self,
        tenant: &TenantId,
        limit: i64,
    ) -> Result<Vec<Family>, DirectoryError> {
        let rows = sqlx::query(
            "SELECT * FROM families WHERE tenant_id = $1 ORDER BY created_at, id LIMIT $2",
        )
        .bind(tenant.as_str())
        .bind(limit.clamp(1, 1000))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter().map(family_from_row).collect()
    }

    /// Guardians of a family (revoked ones too when `with_revoked`), primary first.
    pub async fn family_guardians(
        &self,
        family: &str,
        with_revoked: bool,
    ) -> Result<Vec<Guardian>, DirectoryError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {GUARDIAN_COLUMNS} FROM family_guardians g WHERE g.family_id = $1 {}
             ORDER BY CASE WHEN g.revoked_at IS NULL THEN 0 ELSE 1 END,
                      CASE WHEN g.role = 'primary' THEN 0 ELSE 1 END, g.added_at, g.id",
            if with_revoked {
                ""
            } else {
                "AND g.revoked_at IS NULL"
            }
        )))
        .bind(family)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter().map(guardian_from_row).collect()
    }

    /// Learners of a family, oldest link first.
    pub async fn family_students(
        &self,
        family: &str,
    ) -> Result<Vec<FamilyStudent>, DirectoryError> {
        let rows = sqlx::query(
            "SELECT * FROM family_students WHERE family_id = $1 ORDER BY linked_at, account_id",
        )
        .bind(family)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter()
            .map(|r| {
                Ok(FamilyStudent {
                    family: col(r, "family_id")?,
                    account: AccountId::new(col::<String>(r, "account_id")?),
                    linked_by: col(r, "linked_by")?,
                    linked_at: col(r, "linked_at")?,
                })
            })
            .collect()
    }

    /// The live memberships of an account, oldest first.
    pub async fn memberships_of(
        &self,
        account: &AccountId,
    ) -> Result<Vec<Membership>, DirectoryError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {GUARDIAN_COLUMNS}, f.id, f.tenant_id, f.name, f.primary_account_id,
                f.created_at, f.updated_at, f.merged_into
             FROM family_guardians g JOIN families f ON f.id = g.family_id
             WHERE g.account_id = $1 AND g.revoked_at IS NULL
             ORDER BY g.added_at, g.id"
        )))
        .bind(account.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter()
            .map(|r| {
                Ok(Membership {
                    family: family_from_row(r)?,
                    guardian: guardian_from_row(r)?,
                })
            })
            .collect()
    }

    /// Links a learner (an account of the family's tenant) to a family; linking twice is a
    /// no-op. `linked_by`: `sourced_id` or `parent_code`.
    pub async fn link_family_student(
        &self,
        family: &str,
        learner: &AccountId,
        linked_by: &str,
        now: i64,
    ) -> Result<(), DirectoryError> {
        if !matches!(linked_by, "sourced_id" | "parent_code") {
            return Err(DirectoryError::Invalid(format!(
                "unknown link kind {linked_by:?}"
            )));
        }
        let f = self
            .get_family(family)
            .await?
            .ok_or_else(|| DirectoryError::NotFound {
                what: format!("family {family}"),
            })?;
        match self.get_account(learner).await? {
            Some(a) if a.tenant == f.tenant => {}
            _ => {
                return Err(DirectoryError::NotFound {
                    what: format!("account {learner} in tenant {}", f.tenant),
                });
            }
        }
        sqlx::query(
            "INSERT INTO family_students (family_id, account_id, linked_by, linked_at)
             VALUES ($1, $2, $3, $4) ON CONFLICT (family_id, account_id) DO NOTHING",
        )
        .bind(family)
        .bind(learner.as_str())
        .bind(linked_by)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    /// Links the learner with this roster `sourcedId` (which must have an account) to a
    /// family of the same tenant. The linked account, or `NotFound`.
    pub async fn link_family_student_by_sourced_id(
        &self,
        family: &str,
        sourced_id: &str,
        now: i64,
    ) -> Result<AccountId, DirectoryError> {
        let f = self
            .get_family(family)
            .await?
            .ok_or_else(|| DirectoryError::NotFound {
                what: format!("family {family}"),
            })?;
        let account: Option<Option<String>> = sqlx::query_scalar(
            "SELECT account_id FROM roster_users WHERE tenant_id = $1 AND sourced_id = $2",
        )
        .bind(f.tenant.as_str())
        .bind(sourced_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        let Some(Some(account)) = account else {
            return Err(DirectoryError::NotFound {
                what: format!("rostered learner {sourced_id} with an account"),
            });
        };
        let account = AccountId::new(account);
        self.link_family_student(family, &account, "sourced_id", now)
            .await?;
        Ok(account)
    }

    /// Records an invitation (by its token's hash) and its mail, in one transaction. The
    /// inviter must be the family's live primary guardian ([`DirectoryError::Invalid`]
    /// otherwise; checked inside the transaction).
    pub async fn create_family_invitation(
        &self,
        inv: &FamilyInvitation,
        mail: Option<&NewMail>,
    ) -> Result<(), DirectoryError> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        let inserted = sqlx::query(
            "INSERT INTO family_invitations (token_hash, family_id, tenant_id, email_norm,
                invited_by, created_at)
             SELECT $1, $2, $3, $4, $5, $6 WHERE EXISTS (
                SELECT 1 FROM family_guardians WHERE family_id = $2 AND account_id = $5
                  AND role = 'primary' AND revoked_at IS NULL)",
        )
        .bind(&inv.token_hash)
        .bind(&inv.family)
        .bind(inv.tenant.as_str())
        .bind(crate::normalise_email(&inv.email))
        .bind(inv.invited_by.as_str())
        .bind(inv.created_at)
        .execute(&mut *tx)
        .await
        .map_err(|e| {
            DirectoryError::from_sqlx(e, || format!("invitation of family {}", inv.family))
        })?;
        if inserted.rows_affected() != 1 {
            return Err(DirectoryError::Invalid(format!(
                "{} is not the primary guardian of family {}",
                inv.invited_by, inv.family
            )));
        }
        if let Some(m) = mail {
            insert_mail(&mut *tx, m).await?;
        }
        tx.commit().await.map_err(db)
    }

    /// The family invitation with this token hash.
    pub async fn family_invitation_by_hash(
        &self,
        token_hash: &str,
    ) -> Result<Option<FamilyInvitation>, DirectoryError> {
        let row = sqlx::query("SELECT * FROM family_invitations WHERE token_hash = $1")
            .bind(token_hash)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        row.as_ref().map(invitation_from_row).transpose()
    }

    /// Invitations of a family, newest first.
    pub async fn family_invitations(
        &self,
        family: &str,
    ) -> Result<Vec<FamilyInvitation>, DirectoryError> {
        let rows = sqlx::query(
            "SELECT * FROM family_invitations WHERE family_id = $1 ORDER BY created_at DESC, token_hash",
        )
        .bind(family)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter().map(invitation_from_row).collect()
    }

    /// Uses an invitation for `account`: of concurrent callers exactly one gets
    /// [`InviteUse::Joined`]. With `new_account` (the account row and its argon2id
    /// password hash) the account and its local credentials are created in the same
    /// transaction, so a failed or lost race leaves nothing behind.
    pub async fn use_family_invitation(
        &self,
        token_hash: &str,
        account: &AccountId,
        new_account: Option<(&Account, &str)>,
        now: i64,
    ) -> Result<InviteUse, DirectoryError> {
        let Some(inv) = self.family_invitation_by_hash(token_hash).await? else {
            return Ok(InviteUse::Unknown);
        };
        if let Some((a, _)) = new_account
            && (&a.id != account || a.tenant != inv.tenant)
        {
            return Err(DirectoryError::Invalid(
                "the new account must be the joining account, in the invitation's tenant".into(),
            ));
        }
        let mut tx = self.pool.begin().await.map_err(db)?;
        if let Some((a, password_hash)) = new_account {
            insert_account(&mut *tx, a).await?;
            sqlx::query(
                "INSERT INTO local_credentials (account_id, tenant_id, password_hash,
                    password_set_at, failed_attempts, created_at)
                 VALUES ($1, $2, $3, $4, 0, $4)",
            )
            .bind(a.id.as_str())
            .bind(a.tenant.as_str())
            .bind(password_hash)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(|e| DirectoryError::from_sqlx(e, || format!("credentials of {}", a.id)))?;
        }
        let family: Option<String> = sqlx::query_scalar(
            "UPDATE family_invitations SET used_at = $2, used_by = $3
             WHERE token_hash = $1 AND used_at IS NULL AND revoked_at IS NULL
             RETURNING family_id",
        )
        .bind(token_hash)
        .bind(now)
        .bind(account.as_str())
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?;
        let Some(family) = family else {
            drop(tx);
            return Ok(match self.family_invitation_by_hash(token_hash).await? {
                Some(i) if i.revoked_at.is_some() => InviteUse::Revoked,
                Some(_) => InviteUse::Spent,
                None => InviteUse::Unknown,
            });
        };
        // Claimed first: the transaction's first statement writes, so on SQLite a second
        // use waits for the write lock (busy timeout) instead of failing on a stale
        // snapshot. Already a member: roll back, the invitation stays unused.
        let live: Option<String> = sqlx::query_scalar(
            "SELECT id FROM family_guardians WHERE family_id = $1 AND account_id = $2
               AND revoked_at IS NULL",
        )
        .bind(&inv.family)
        .bind(account.as_str())
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?;
        if live.is_some() {
            drop(tx);
            return Ok(InviteUse::AlreadyMember { family: inv.family });
        }
        insert_guardian(
            &mut *tx,
            &family,
            account,
            GuardianRole::Secondary,
            &format!("invitation:{}", inv.invited_by),
            now,
        )
        .await?;
        tx.commit().await.map_err(db)?;
        Ok(InviteUse::Joined { family })
    }

    /// Revokes a live *secondary* guardian and writes the mails announcing it, in one
    /// transaction. The revoked membership, or `None` (nothing written) when the account
    /// is not a live secondary of the family.
    pub async fn revoke_secondary(
        &self,
        family: &str,
        account: &AccountId,
        by: &str,
        now: i64,
        mails: &[NewMail],
    ) -> Result<Option<Guardian>, DirectoryError> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        let id: Option<String> = sqlx::query_scalar(
            "UPDATE family_guardians SET revoked_at = $3, revoked_by = $4
             WHERE family_id = $1 AND account_id = $2 AND role = 'secondary'
               AND revoked_at IS NULL
             RETURNING id",
        )
        .bind(family)
        .bind(account.as_str())
        .bind(now)
        .bind(by)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?;
        let Some(id) = id else {
            drop(tx);
            return Ok(None);
        };
        for m in mails {
            insert_mail(&mut *tx, m).await?;
        }
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {GUARDIAN_COLUMNS} FROM family_guardians g WHERE g.id = $1"
        )))
        .bind(&id)
        .fetch_one(&mut *tx)
        .await
        .map_err(db)?;
        let g = guardian_from_row(&row)?;
        tx.commit().await.map_err(db)?;
        Ok(Some(g))
    }

    /// Makes `new_primary` (an account of the family's tenant) the family's primary
    /// guardian, in one transaction: every live membership (the old primary's and every
    /// secondary's) is revoked, every unused invitation is revoked, the new primary is
    /// added, and the mails `mails_for(revoked memberships)` builds are written. The
    /// revoked memberships. `NotFound` for an unknown family or account; `Invalid` when
    /// the account is already the primary.
    pub async fn change_family_primary<F>(
        &self,
        family: &str,
        new_primary: &AccountId,
        by: &str,
        now: i64,
        mails_for: F,
    ) -> Result<Vec<Guardian>, DirectoryError>
    where
        F: FnOnce(&[Guardian]) -> Vec<NewMail> + Send,
    {
        let f = self
            .get_family(family)
            .await?
            .ok_or_else(|| DirectoryError::NotFound {
                what: format!("family {family}"),
            })?;
        if f.merged_into.is_some() {
            return Err(DirectoryError::NotFound {
                what: format!("live family {family} (it was merged)"),
            });
        }
        match self.get_account(new_primary).await? {
            Some(a) if a.tenant == f.tenant => {}
            _ => {
                return Err(DirectoryError::NotFound {
                    what: format!("account {new_primary} in tenant {}", f.tenant),
                });
            }
        }
        let mut tx = self.pool.begin().await.map_err(db)?;
        // Conditional on the primary we read: a concurrent change makes this one fail.
        let moved = sqlx::query(
            "UPDATE families SET primary_account_id = $2, updated_at = $3
             WHERE id = $1 AND primary_account_id = $4 AND primary_account_id <> $2",
        )
        .bind(family)
        .bind(new_primary.as_str())
        .bind(now)
        .bind(f.primary.as_str())
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        if moved.rows_affected() != 1 {
            drop(tx);
            return Err(if &f.primary == new_primary {
                DirectoryError::Invalid(format!("{new_primary} is already the primary guardian"))
            } else {
                DirectoryError::Conflict {
                    what: format!("primary of family {family} changed concurrently"),
                }
            });
        }
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {GUARDIAN_COLUMNS} FROM family_guardians g
             WHERE g.family_id = $1 AND g.revoked_at IS NULL ORDER BY g.added_at, g.id"
        )))
        .bind(family)
        .fetch_all(&mut *tx)
        .await
        .map_err(db)?;
        let mut revoked: Vec<Guardian> = rows
            .iter()
            .map(guardian_from_row)
            .collect::<Result<_, _>>()?;
        sqlx::query(
            "UPDATE family_guardians SET revoked_at = $2, revoked_by = $3
             WHERE family_id = $1 AND revoked_at IS NULL",
        )
        .bind(family)
        .bind(now)
        .bind(by)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        for g in &mut revoked {
            g.revoked_at = Some(now);
            g.revoked_by = Some(by.to_owned());
        }
        sqlx::query(
            "UPDATE family_invitations SET revoked_at = $2
             WHERE family_id = $1 AND used_at IS NULL AND revoked_at IS NULL",
        )
        .bind(family)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        insert_guardian(
            &mut *tx,
            family,
            new_primary,
            GuardianRole::Primary,
            by,
            now,
        )
        .await?;
        for m in mails_for(&revoked) {
            insert_mail(&mut *tx, &m).await?;
        }
        tx.commit().await.map_err(db)?;
        Ok(revoked)
    }

    /// Merges family `from` into `into` (same tenant) in one transaction: `from`'s learners
    /// move to `into`; every live guardian of `from` (its primary too) and every live
    /// secondary of `into` is revoked, with both families' pending invitations; `into`'s
    /// primary stays and must invite again; `from` records `merged_into`. The revoked
    /// memberships, whose mails `mails_for` writes in the same transaction.
    pub async fn merge_families<F>(
        &self,
        from: &str,
        into: &str,
        by: &str,
        now: i64,
        mails_for: F,
    ) -> Result<Vec<Guardian>, DirectoryError>
    where
        F: FnOnce(&[Guardian]) -> Vec<NewMail> + Send,
    {
        if from == into {
            return Err(DirectoryError::Invalid(
                "a family cannot be merged into itself".into(),
            ));
        }
        let mut tx = self.pool.begin().await.map_err(db)?;
        // Marked first (a write, so SQLite takes the write lock now): only a live family of
        // the same tenant as a live `into` is merged; a concurrent merge makes this fail.
        let marked = sqlx::query(
            "UPDATE families SET merged_into = $2, updated_at = $3
             WHERE id = $1 AND merged_into IS NULL AND EXISTS (
                SELECT 1 FROM families i WHERE i.id = $2 AND i.merged_into IS NULL
                  AND i.tenant_id = families.tenant_id)",
        )
        .bind(from)
        .bind(into)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        if marked.rows_affected() != 1 {
            drop(tx);
            return Err(DirectoryError::NotFound {
                what: format!("live families {from} and {into} of one tenant"),
            });
        }
        sqlx::query(
            "INSERT INTO family_students (family_id, account_id, linked_by, linked_at)
             SELECT $2, account_id, linked_by, $3 FROM family_students WHERE family_id = $1
             ON CONFLICT (family_id, account_id) DO NOTHING",
        )
        .bind(from)
        .bind(into)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        sqlx::query("DELETE FROM family_students WHERE family_id = $1")
            .bind(from)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {GUARDIAN_COLUMNS} FROM family_guardians g
             WHERE g.revoked_at IS NULL
               AND (g.family_id = $1 OR (g.family_id = $2 AND g.role = 'secondary'))
             ORDER BY g.added_at, g.id"
        )))
        .bind(from)
        .bind(into)
        .fetch_all(&mut *tx)
        .await
        .map_err(db)?;
        let mut revoked: Vec<Guardian> = rows
            .iter()
            .map(guardian_from_row)
            .collect::<Result<_, _>>()?;
        sqlx::query(
            "UPDATE family_guardians SET revoked_at = $3, revoked_by = $4
             WHERE revoked_at IS NULL
               AND (family_id = $1 OR (family_id = $2 AND role = 'secondary'))",
        )
        .bind(from)
        .bind(into)
        .bind(now)
        .bind(by)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        for g in &mut revoked {
            g.revoked_at = Some(now);
            g.revoked_by = Some(by.to_owned());
        }
        sqlx::query(
            "UPDATE family_invitations SET revoked_at = $3
             WHERE family_id IN ($1, $2) AND used_at IS NULL AND revoked_at IS NULL",
        )
        .bind(from)
        .bind(into)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        sqlx::query("UPDATE families SET updated_at = $2 WHERE id = $1")
            .bind(into)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        for m in mails_for(&revoked) {
            insert_mail(&mut *tx, &m).await?;
        }
        tx.commit().await.map_err(db)?;
        Ok(revoked)
    }

    /// Records that `account` attested being 18 or older (the first attestation is kept).
    pub async fn attest_adult(
        &self,
        account: &AccountId,
        now: i64,
        ip: Option<&str>,
    ) -> Result<(), DirectoryError> {
        sqlx::query(
            "INSERT INTO guardian_attestations (account_id, attested_at, ip) VALUES ($1, $2, $3)
             ON CONFLICT (account_id) DO NOTHING",
        )
        .bind(account.as_str())
        .bind(now)
        .bind(ip)
        .execute(&self.pool)
        .await
        .map_err(|e| DirectoryError::from_sqlx(e, || format!("attestation of {account}")))?;
        Ok(())
    }

    /// When `account` attested being 18 or older, if it did.
    pub async fn adult_attested_at(
        &self,
        account: &AccountId,
    ) -> Result<Option<i64>, DirectoryError> {
        sqlx::query_scalar("SELECT attested_at FROM guardian_attestations WHERE account_id = $1")
            .bind(account.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(db)
    }

    /// Records the family's primary guardian accepting these `(policy, version)` pairs, in
    /// one transaction; `false` (nothing written) when `account` is not the live primary.
    pub async fn accept_family_policies(
        &self,
        family: &str,
        account: &AccountId,
        policies: &[(String, String)],
        now: i64,
    ) -> Result<bool, DirectoryError> {
        // Each INSERT carries the primary check, so the transaction's first statement is a
        // write (on SQLite it then waits for the write lock instead of failing on a stale
        // snapshot); nothing is written for anyone but the live primary.
        let mut tx = self.pool.begin().await.map_err(db)?;
        for (policy, version) in policies {
            sqlx::query(
                "INSERT INTO family_policy_acceptances (family_id, account_id, policy, version, accepted_at)
                 SELECT $1, $2, $3, $4, $5 WHERE EXISTS (
                    SELECT 1 FROM family_guardians WHERE family_id = $1 AND account_id = $2
                      AND role = 'primary' AND revoked_at IS NULL)
                 ON CONFLICT (family_id, account_id, policy, version) DO NOTHING",
            )
            .bind(family)
            .bind(account.as_str())
            .bind(policy)
            .bind(version)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        }
        let primary: Option<String> = sqlx::query_scalar(
            "SELECT id FROM family_guardians WHERE family_id = $1 AND account_id = $2
               AND role = 'primary' AND revoked_at IS NULL",
        )
        .bind(family)
        .bind(account.as_str())
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?;
        if primary.is_none() {
            return Ok(false);
        }
        tx.commit().await.map_err(db)?;
        Ok(true)
    }

    /// The `(policy, version)` pairs `account` accepted for a family.
    pub async fn accepted_family_policies(
        &self,
        family: &str,
        account: &AccountId,
    ) -> Result<Vec<(String, String)>, DirectoryError> {
        let rows = sqlx::query(
            "SELECT policy, version FROM family_policy_acceptances
             WHERE family_id = $1 AND account_id = $2 ORDER BY policy, version",
        )
        .bind(family)
        .bind(account.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter()
            .map(|r| Ok((col(r, "policy")?, col(r, "version")?)))
            .collect()
    }

    /// Stores a new parent access code for a learner, replacing (revoking) the learner's
    /// older unused codes, in one transaction.
    pub async fn put_parent_code(&self, code: &ParentCode) -> Result<(), DirectoryError> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        sqlx::query(
            "UPDATE parent_access_codes SET revoked_at = $2
             WHERE account_id = $1 AND used_at IS NULL AND revoked_at IS NULL",
        )
        .bind(code.account.as_str())
        .bind(code.created_at)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        sqlx::query(
            "INSERT INTO parent_access_codes (code_hash, tenant_id, account_id, code_enc,
                created_at, created_by, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&code.code_hash)
        .bind(code.tenant.as_str())
        .bind(code.account.as_str())
        .bind(code.code_enc.as_deref())
        .bind(code.created_at)
        .bind(&code.created_by)
        .bind(code.expires_at)
        .execute(&mut *tx)
        .await
        .map_err(|e| DirectoryError::from_sqlx(e, || format!("parent code of {}", code.account)))?;
        tx.commit().await.map_err(db)
    }

    /// The learner's newest parent access code usable at `now`.
    pub async fn usable_parent_code(
        &self,
        learner: &AccountId,
        now: i64,
    ) -> Result<Option<ParentCode>, DirectoryError> {
        let row = sqlx::query(
            "SELECT * FROM parent_access_codes
             WHERE account_id = $1 AND used_at IS NULL AND revoked_at IS NULL AND expires_at > $2
             ORDER BY created_at DESC LIMIT 1",
        )
        .bind(learner.as_str())
        .bind(now)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        row.as_ref().map(code_from_row).transpose()
    }

    /// Redeems a parent access code of `guardian`'s tenant, exactly once: links the learner
    /// to the family `guardian` is primary of (`family`, or the oldest one), creating a
    /// family named `new_family_name` with the guardian as primary when they have none.
    /// All in one transaction; a lost race or an unusable code writes nothing.
    pub async fn redeem_parent_code(
        &self,
        code_hash: &str,
        guardian: &Account,
        family: Option<&str>,
        new_family_name: &str,
        now: i64,
    ) -> Result<CodeUse, DirectoryError> {
        let memberships = self.memberships_of(&guardian.id).await?;
        let target = memberships
            .iter()
            .filter(|m| m.guardian.role == GuardianRole::Primary)
            .find(|m| family.is_none_or(|f| m.family.id == f))
            .map(|m| m.family.id.clone());
        if target.is_none() && family.is_some() {
            // The family asked for is not one this guardian is primary of.
            return Ok(CodeUse::NotPrimary);
        }
        let mut tx = self.pool.begin().await.map_err(db)?;
        let learner: Option<String> = sqlx::query_scalar(
            "UPDATE parent_access_codes SET used_at = $2, used_by = $3
             WHERE code_hash = $1 AND tenant_id = $4 AND used_at IS NULL AND revoked_at IS NULL
               AND expires_at > $2
             RETURNING account_id",
        )
        .bind(code_hash)
        .bind(now)
        .bind(guardian.id.as_str())
        .bind(guardian.tenant.as_str())
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?;
        let Some(learner) = learner else {
            drop(tx);
            let row = sqlx::query(
                "SELECT * FROM parent_access_codes WHERE code_hash = $1 AND tenant_id = $2",
            )
            .bind(code_hash)
            .bind(guardian.tenant.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
            return Ok(match row.as_ref().map(code_from_row).transpose()? {
                None => CodeUse::Unknown,
                Some(c) if c.used_at.is_some() || c.revoked_at.is_some() => CodeUse::Spent,
                Some(_) => CodeUse::Expired,
            });
        };
        let (family_id, created) = match target {
            Some(f) => (f, false),
            None => {
                let f = Family {
                    id: new_id("fam"),
                    tenant: guardian.tenant.clone(),
                    name: new_family_name.trim().chars().take(200).collect(),
                    primary: guardian.id.clone(),
                    created_at: now,
                    updated_at: now,
                    merged_into: None,
                };
                insert_family(&mut *tx, &f).await?;
                insert_guardian(
                    &mut *tx,
                    &f.id,
                    &guardian.id,
                    GuardianRole::Primary,
                    "parent_code",
                    now,
                )
                .await?;
                (f.id, true)
            }
        };
        sqlx::query(
            "INSERT INTO family_students (family_id, account_id, linked_by, linked_at)
             VALUES ($1, $2, 'parent_code', $3) ON CONFLICT (family_id, account_id) DO NOTHING",
        )
        .bind(&family_id)
        .bind(&learner)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(CodeUse::Linked {
            family: family_id,
            learner: AccountId::new(learner),
            created,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_and_access_round_trip() {
        for r in [GuardianRole::Primary, GuardianRole::Secondary] {
            assert_eq!(GuardianRole::parse(r.as_str()), Some(r));
        }
        for a in [GuardianAccess::Full, GuardianAccess::View] {
            assert_eq!(GuardianAccess::parse(a.as_str()), Some(a));
        }
        assert_eq!(GuardianRole::parse("owner"), None);
        assert_eq!(GuardianAccess::parse("edit"), None);
    }

    #[test]
    fn codes_are_usable_until_used_replaced_or_expired() {
        let mut c = ParentCode {
            code_hash: "h".into(),
            tenant: TenantId::new("t"),
            account: AccountId::new("a"),
            code_enc: None,
            created_at: 0,
            created_by: "x".into(),
            expires_at: 100,
            used_at: None,
            used_by: None,
            revoked_at: None,
        };
        assert!(c.usable(99));
        assert!(!c.usable(100));
        c.used_at = Some(5);
        assert!(!c.usable(50));
    }
}
