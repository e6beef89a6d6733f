//! OneRoster data kept per tenant (orgs, users, 1.2 roles, classes, enrollments), the
//! import log, and the one transaction that applies a planned import.
//!
//! The roster lives in its own tables (`roster_*`, migration `..._roster.sql`) keyed to
//! accounts by `roster_users.account_id`; the [`Account`] rows themselves keep their
//! shape. Parsing, validation and planning live in the `homeroom-roster` crate: this
//! module only reads a tenant's roster state ([`Directory::roster_snapshot`]) and writes
//! a [`RosterChanges`] set all-or-nothing ([`Directory::apply_roster_changes`]).
//!
//! Bulk writes are multi-row statements (a few hundred rows each) inside one
//! transaction, so a 100,000-user package is applied in seconds on SQLite.

use crate::codec::{col, col_flag, col_json, flag, normalise_email, to_json};
use crate::error::{DirectoryError, db};
use crate::{Account, AccountStatus, Backend, Directory};
use homeroom_core::{AccountId, Role, TenantId};
use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;

/// Whether a roster person is in the roster now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RosterUserStatus {
    /// In the roster (last bulk users file, or added/updated by a delta).
    Active,
    /// `tobedeleted`, or absent from a later bulk users file. The row is kept so sign-in
    /// can explain the refusal; its account is archived.
    Removed,
}

impl RosterUserStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            RosterUserStatus::Active => "active",
            RosterUserStatus::Removed => "removed",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(Self::Active),
            "removed" => Some(Self::Removed),
            _ => None,
        }
    }
}

/// An org (district, school, ...) from `orgs.csv`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RosterOrg {
    pub sourced_id: String,
    pub name: String,
    /// `district`, `school`, `department`, `local`, `state`, `national`.
    pub org_type: String,
    pub identifier: Option<String>,
    pub parent_sourced_id: Option<String>,
    /// Unix seconds.
    pub date_last_modified: Option<i64>,
    /// `metadata.*` / `ext_*` columns, as a JSON object.
    pub extra: serde_json::Value,
}

/// A person from `users.csv`, with the Homeroom account the roster drives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RosterUser {
    pub tenant: TenantId,
    pub sourced_id: String,
    pub account: Option<AccountId>,
    pub status: RosterUserStatus,
    /// `enabledUser`: `false` means the person exists but must not sign in.
    pub enabled: bool,
    pub username: String,
    /// Normalised (trimmed, lower-case).
    pub email: Option<String>,
    pub given_name: String,
    pub family_name: String,
    pub middle_name: Option<String>,
    pub preferred_given_name: Option<String>,
    pub preferred_family_name: Option<String>,
    pub identifier: Option<String>,
    pub user_master_identifier: Option<String>,
    /// 1.1 `users.csv` `role`, as written in the file (`None` for 1.2 users).
    pub role_1p1: Option<String>,
    /// Homeroom roles derived from the roster (1.1 `role`, or the 1.2 roles file).
    pub roles: Vec<Role>,
    /// Orgs of the person (1.1 `orgSourcedIds`, or the orgs of their 1.2 roles).
    pub org_sourced_ids: Vec<String>,
    pub primary_org_sourced_id: Option<String>,
    /// CEDS grade codes, normalised (`7` → `07`).
    pub grades: Vec<String>,
    /// `userIds` items as written (`{LDAP:jdoe}`).
    pub user_ids: Vec<String>,
    pub agent_sourced_ids: Vec<String>,
    /// Unix seconds.
    pub date_last_modified: Option<i64>,
    /// The account status the roster last wrote (see the migration).
    pub account_status_set: Option<AccountStatus>,
    pub removed_at: Option<i64>,
    pub removed_by_import: Option<String>,
    pub extra: serde_json::Value,
}

/// A 1.2 `roles.csv` row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RosterRole {
    pub sourced_id: String,
    pub user_sourced_id: String,
    /// `primary` or `secondary`.
    pub role_type: String,
    /// The OneRoster role as written (`teacher`, `districtAdministrator`, `ext:...`).
    pub role: String,
    pub org_sourced_id: String,
    pub begin_date: Option<String>,
    pub end_date: Option<String>,
    pub user_profile: Option<String>,
    pub date_last_modified: Option<i64>,
    pub extra: serde_json::Value,
}

/// A class from `classes.csv`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RosterClass {
    pub sourced_id: String,
    pub title: String,
    pub class_code: Option<String>,
    /// `homeroom` or `scheduled`.
    pub class_type: String,
    pub location: Option<String>,
    pub school_sourced_id: String,
    pub course_sourced_id: Option<String>,
    pub term_sourced_ids: Vec<String>,
    pub grades: Vec<String>,
    pub subjects: Vec<String>,
    pub subject_codes: Vec<String>,
    pub periods: Vec<String>,
    pub date_last_modified: Option<i64>,
    pub extra: serde_json::Value,
}

/// An enrollment from `enrollments.csv`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RosterEnrollment {
    pub sourced_id: String,
    pub class_sourced_id: String,
    pub school_sourced_id: String,
    pub user_sourced_id: String,
    /// `student`, `teacher`, `administrator`, `proctor` (or `aide`).
    pub role: String,
    pub primary: Option<bool>,
    pub begin_date: Option<String>,
    pub end_date: Option<String>,
    pub date_last_modified: Option<i64>,
    pub extra: serde_json::Value,
}

/// One import attempt, as logged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RosterImport {
    pub id: String,
    pub tenant: TenantId,
    pub started_at: i64,
    pub finished_at: i64,
    /// `bulk`, `delta`, `mixed` or `empty` (from the manifest's `file.*` values).
    pub mode: String,
    pub oneroster_version: Option<String>,
    /// `ok` or `failed`.
    pub status: String,
    /// Whether `users.csv` was a bulk file (such an import is a "bulk import" of people).
    pub users_bulk: bool,
    pub added: i64,
    pub updated: i64,
    pub deactivated: i64,
    pub conflicts: i64,
    pub errors: i64,
    /// The full import report, JSON.
    pub report: serde_json::Value,
}

impl RosterImport {
    pub fn succeeded(&self) -> bool {
        self.status == "ok"
    }
}

/// Everything of a tenant an import plan compares against.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RosterSnapshot {
    pub orgs: Vec<RosterOrg>,
    /// Active and removed.
    pub users: Vec<RosterUser>,
    pub roles: Vec<RosterRole>,
    pub classes: Vec<RosterClass>,
    pub enrollments: Vec<RosterEnrollment>,
    /// Every account of the tenant, rostered or not.
    pub accounts: Vec<Account>,
}

/// The fields of an account the roster drives; written as a whole.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccountUpdate {
    pub id: AccountId,
    pub status: AccountStatus,
    pub email: Option<String>,
    pub email_verified: bool,
    pub name: Option<String>,
    pub given_name: Option<String>,
    pub family_name: Option<String>,
    pub username: Option<String>,
    pub roles: Vec<Role>,
}

/// A planned import: everything written by [`Directory::apply_roster_changes`], in one
/// transaction, together with its log row.
#[derive(Debug, Clone, PartialEq)]
pub struct RosterChanges {
    pub tenant: TenantId,
    pub accounts_create: Vec<Account>,
    pub accounts_update: Vec<AccountUpdate>,
    pub users_upsert: Vec<RosterUser>,
    pub orgs_upsert: Vec<RosterOrg>,
    pub orgs_delete: Vec<String>,
    pub roles_upsert: Vec<RosterRole>,
    pub roles_delete: Vec<String>,
    pub classes_upsert: Vec<RosterClass>,
    pub classes_delete: Vec<String>,
    pub enrollments_upsert: Vec<RosterEnrollment>,
    pub enrollments_delete: Vec<String>,
    pub import: RosterImport,
}

impl RosterChanges {
    /// No writes besides the import row.
    pub fn is_empty(&self) -> bool {
        self.accounts_create.is_empty()
            && self.accounts_update.is_empty()
            && self.users_upsert.is_empty()
            && self.orgs_upsert.is_empty()
            && self.orgs_delete.is_empty()
            && self.roles_upsert.is_empty()
            && self.roles_delete.is_empty()
            && self.classes_upsert.is_empty()
            && self.classes_delete.is_empty()
            && self.enrollments_upsert.is_empty()
            && self.enrollments_delete.is_empty()
    }
}

// ---------------------------------------------------------------------------------------
// Row decoding
// ---------------------------------------------------------------------------------------

fn opt_i64(row: &AnyRow, name: &str) -> Result<Option<i64>, DirectoryError> {
    col(row, name)
}

fn org_from_row(row: &AnyRow) -> Result<RosterOrg, DirectoryError> {
    Ok(RosterOrg {
        sourced_id: col(row, "sourced_id")?,
        name: col(row, "name")?,
        org_type: col(row, "org_type")?,
        identifier: col(row, "identifier")?,
        parent_sourced_id: col(row, "parent_sourced_id")?,
        date_last_modified: opt_i64(row, "date_last_modified")?,
        extra: col_json(row, "extra")?,
    })
}

fn user_from_row(row: &AnyRow) -> Result<RosterUser, DirectoryError> {
    let status: String = col(row, "status")?;
    let set: Option<String> = col(row, "account_status_set")?;
    Ok(RosterUser {
        tenant: TenantId::new(col::<String>(row, "tenant_id")?),
        sourced_id: col(row, "sourced_id")?,
        account: col::<Option<String>>(row, "account_id")?.map(AccountId::new),
        status: RosterUserStatus::parse(&status)
            .ok_or_else(|| DirectoryError::Corrupt(format!("unknown roster status {status:?}")))?,
        enabled: col_flag(row, "enabled")?,
        username: col(row, "username")?,
        email: col(row, "email")?,
        given_name: col(row, "given_name")?,
        family_name: col(row, "family_name")?,
        middle_name: col(row, "middle_name")?,
        preferred_given_name: col(row, "preferred_given_name")?,
        preferred_family_name: col(row, "preferred_family_name")?,
        identifier: col(row, "identifier")?,
        user_master_identifier: col(row, "user_master_identifier")?,
        role_1p1: col(row, "role_1p1")?,
        roles: col_json(row, "roles")?,
        org_sourced_ids: col_json(row, "org_sourced_ids")?,
        primary_org_sourced_id: col(row, "primary_org_sourced_id")?,
        grades: col_json(row, "grades")?,
        user_ids: col_json(row, "user_ids")?,
        agent_sourced_ids: col_json(row, "agent_sourced_ids")?,
        date_last_modified: opt_i64(row, "date_last_modified")?,
        account_status_set: match set {
            None => None,
            Some(s) => {
                Some(AccountStatus::parse(&s).ok_or_else(|| {
                    DirectoryError::Corrupt(format!("unknown account status {s:?}"))
                })?)
            }
        },
        removed_at: opt_i64(row, "removed_at")?,
        removed_by_import: col(row, "removed_by_import")?,
        extra: col_json(row, "extra")?,
    })
}

fn role_from_row(row: &AnyRow) -> Result<RosterRole, DirectoryError> {
    Ok(RosterRole {
        sourced_id: col(row, "sourced_id")?,
        user_sourced_id: col(row, "user_sourced_id")?,
        role_type: col(row, "role_type")?,
        role: col(row, "role")?,
        org_sourced_id: col(row, "org_sourced_id")?,
        begin_date: col(row, "begin_date")?,
        end_date: col(row, "end_date")?,
        user_profile: col(row, "user_profile")?,
        date_last_modified: opt_i64(row, "date_last_modified")?,
        extra: col_json(row, "extra")?,
    })
}

fn class_from_row(row: &AnyRow) -> Result<RosterClass, DirectoryError> {
    Ok(RosterClass {
        sourced_id: col(row, "sourced_id")?,
        title: col(row, "title")?,
        class_code: col(row, "class_code")?,
        class_type: col(row, "class_type")?,
        location: col(row, "location")?,
        school_sourced_id: col(row, "school_sourced_id")?,
        course_sourced_id: col(row, "course_sourced_id")?,
        term_sourced_ids: col_json(row, "term_sourced_ids")?,
        grades: col_json(row, "grades")?,
        subjects: col_json(row, "subjects")?,
        subject_codes: col_json(row, "subject_codes")?,
        periods: col_json(row, "periods")?,
        date_last_modified: opt_i64(row, "date_last_modified")?,
        extra: col_json(row, "extra")?,
    })
}

fn enrollment_from_row(row: &AnyRow) -> Result<RosterEnrollment, DirectoryError> {
    let primary: Option<i64> = col(row, "is_primary")?;
    Ok(RosterEnrollment {
        sourced_id: col(row, "sourced_id")?,
        class_sourced_id: col(row, "class_sourced_id")?,
        school_sourced_id: col(row, "school_sourced_id")?,
        user_sourced_id: col(row, "user_sourced_id")?,
        role: col(row, "role")?,
        primary: primary.map(|p| p != 0),
        begin_date: col(row, "begin_date")?,
        end_date: col(row, "end_date")?,
        date_last_modified: opt_i64(row, "date_last_modified")?,
        extra: col_json(row, "extra")?,
    })
}

fn import_from_row(row: &AnyRow) -> Result<RosterImport, DirectoryError> {
    Ok(RosterImport {
        id: col(row, "id")?,
        tenant: TenantId::new(col::<String>(row, "tenant_id")?),
        started_at: col(row, "started_at")?,
        finished_at: col(row, "finished_at")?,
        mode: col(row, "mode")?,
        oneroster_version: col(row, "oneroster_version")?,
        status: col(row, "status")?,
        users_bulk: col_flag(row, "users_bulk")?,
        added: col(row, "added")?,
        updated: col(row, "updated")?,
        deactivated: col(row, "deactivated")?,
        conflicts: col(row, "conflicts")?,
        errors: col(row, "errors")?,
        report: col_json(row, "report")?,
    })
}

/// The same decoding as the accounts module (kept private there).
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

// ---------------------------------------------------------------------------------------
// Multi-row writes
// ---------------------------------------------------------------------------------------

/// One bound value of a multi-row statement.
enum Val {
    Text(Option<String>),
    Int(Option<i64>),
}

fn t(s: &str) -> Val {
    Val::Text(Some(s.to_owned()))
}
fn ot(s: &Option<String>) -> Val {
    Val::Text(s.clone())
}
fn oi(i: Option<i64>) -> Val {
    Val::Int(i)
}
fn json<T: Serialize + ?Sized>(v: &T) -> Result<Val, DirectoryError> {
    Ok(Val::Text(Some(to_json(v)?)))
}

/// Parameters per statement stay well under SQLite's 32,766 and PostgreSQL's 65,535.
const MAX_PARAMS: usize = 20_000;
const MAX_ROWS: usize = 500;

type Tx<'a> = sqlx::Transaction<'a, sqlx::Any>;

/// Placeholder `n` (1-based). SQLite gets anonymous `?`: it resolves `$n` names by a
/// linear scan per parameter, which makes a statement with thousands of them quadratic.
fn placeholder(backend: Backend, n: usize) -> String {
    match backend {
        Backend::Sqlite => "?".to_owned(),
        Backend::Postgres => format!("${n}"),
    }
}

/// `INSERT INTO table (cols) VALUES (...), ... [ON CONFLICT (keys) DO UPDATE SET ...]`,
/// chunked. `keys` empty: plain insert.
async fn insert_rows(
    backend: Backend,
    tx: &mut Tx<'_>,
    table: &str,
    cols: &[&str],
    keys: &[&str],
    rows: Vec<Vec<Val>>,
) -> Result<(), DirectoryError> {
    if rows.is_empty() {
        return Ok(());
    }
    let per_chunk = (MAX_PARAMS / cols.len()).clamp(1, MAX_ROWS);
    let upsert = if keys.is_empty() {
        String::new()
    } else {
        let sets: Vec<String> = cols
            .iter()
            .filter(|c| !keys.contains(c))
            .map(|c| format!("{c} = excluded.{c}"))
            .collect();
        format!(
            " ON CONFLICT ({}) DO UPDATE SET {}",
            keys.join(", "),
            sets.join(", ")
        )
    };
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        let chunk: Vec<Vec<Val>> = rows.by_ref().take(per_chunk).collect();
        let mut sql = format!("INSERT INTO {table} ({}) VALUES ", cols.join(", "));
        let mut n = 0usize;
        for (i, row) in chunk.iter().enumerate() {
            if row.len() != cols.len() {
                return Err(DirectoryError::Invalid(format!(
                    "{table}: row with {} values for {} columns",
                    row.len(),
                    cols.len()
                )));
            }
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push('(');
            for j in 0..row.len() {
                if j > 0 {
                    sql.push_str(", ");
                }
                n += 1;
                sql.push_str(&placeholder(backend, n));
            }
            sql.push(')');
        }
        sql.push_str(&upsert);
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for row in chunk {
            for v in row {
                q = match v {
                    Val::Text(s) => q.bind(s),
                    Val::Int(i) => q.bind(i),
                };
            }
        }
        q.execute(&mut **tx).await.map_err(|e| {
            DirectoryError::from_sqlx(e, || format!("{table} rows (an id already exists)"))
        })?;
    }
    Ok(())
}

/// `DELETE FROM table WHERE tenant_id = $1 AND sourced_id IN (...)`, chunked.
async fn delete_rows(
    backend: Backend,
    tx: &mut Tx<'_>,
    table: &str,
    tenant: &TenantId,
    ids: &[String],
) -> Result<(), DirectoryError> {
    for chunk in ids.chunks(MAX_ROWS) {
        let list: Vec<String> = (0..chunk.len())
            .map(|i| placeholder(backend, i + 2))
            .collect();
        let sql = format!(
            "DELETE FROM {table} WHERE tenant_id = {} AND sourced_id IN ({})",
            placeholder(backend, 1),
            list.join(", ")
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(tenant.as_str());
        for id in chunk {
            q = q.bind(id.as_str());
        }
        q.execute(&mut **tx).await.map_err(db)?;
    }
    Ok(())
}

const ACCOUNT_COLS: &[&str] = &[
    "id",
    "tenant_id",
    "status",
    "email",
    "email_norm",
    "email_verified",
    "name",
    "given_name",
    "family_name",
    "username",
    "roles",
    "created_at",
    "last_sign_in_at",
    "sign_in_count",
];

fn account_vals(a: &Account) -> Result<Vec<Val>, DirectoryError> {
    Ok(vec![
        t(a.id.as_str()),
        t(a.tenant.as_str()),
        t(a.status.as_str()),
        ot(&a.email),
        Val::Text(a.email.as_deref().map(normalise_email)),
        Val::Int(Some(flag(a.email_verified))),
        ot(&a.name),
        ot(&a.given_name),
        ot(&a.family_name),
        ot(&a.username),
        json(&a.roles)?,
        Val::Int(Some(a.created_at)),
        oi(a.last_sign_in_at),
        Val::Int(Some(a.sign_in_count)),
    ])
}

const USER_COLS: &[&str] = &[
    "tenant_id",
    "sourced_id",
    "account_id",
    "status",
    "enabled",
    "username",
    "email",
    "email_norm",
    "given_name",
    "family_name",
    "middle_name",
    "preferred_given_name",
    "preferred_family_name",
    "identifier",
    "user_master_identifier",
    "role_1p1",
    "roles",
    "org_sourced_ids",
    "primary_org_sourced_id",
    "grades",
    "user_ids",
    "agent_sourced_ids",
    "date_last_modified",
    "account_status_set",
    "removed_at",
    "removed_by_import",
    "extra",
];

fn user_vals(tenant: &TenantId, u: &RosterUser) -> Result<Vec<Val>, DirectoryError> {
    Ok(vec![
        t(tenant.as_str()),
        t(&u.sourced_id),
        Val::Text(u.account.as_ref().map(|a| a.as_str().to_owned())),
        t(u.status.as_str()),
        Val::Int(Some(flag(u.enabled))),
        t(&u.username),
        ot(&u.email),
        Val::Text(u.email.as_deref().map(normalise_email)),
        t(&u.given_name),
        t(&u.family_name),
        ot(&u.middle_name),
        ot(&u.preferred_given_name),
        ot(&u.preferred_family_name),
        ot(&u.identifier),
        ot(&u.user_master_identifier),
        ot(&u.role_1p1),
        json(&u.roles)?,
        json(&u.org_sourced_ids)?,
        ot(&u.primary_org_sourced_id),
        json(&u.grades)?,
        json(&u.user_ids)?,
        json(&u.agent_sourced_ids)?,
        oi(u.date_last_modified),
        Val::Text(u.account_status_set.map(|s| s.as_str().to_owned())),
        oi(u.removed_at),
        ot(&u.removed_by_import),
        json(&u.extra)?,
    ])
}

const ORG_COLS: &[&str] = &[
    "tenant_id",
    "sourced_id",
    "name",
    "org_type",
    "identifier",
    "parent_sourced_id",
    "date_last_modified",
    "extra",
];

fn org_vals(tenant: &TenantId, o: &RosterOrg) -> Result<Vec<Val>, DirectoryError> {
    Ok(vec![
        t(tenant.as_str()),
        t(&o.sourced_id),
        t(&o.name),
        t(&o.org_type),
        ot(&o.identifier),
        ot(&o.parent_sourced_id),
        oi(o.date_last_modified),
        json(&o.extra)?,
    ])
}

const ROLE_COLS: &[&str] = &[
    "tenant_id",
    "sourced_id",
    "user_sourced_id",
    "role_type",
    "role",
    "org_sourced_id",
    "begin_date",
    "end_date",
    "user_profile",
    "date_last_modified",
    "extra",
];

fn role_vals(tenant: &TenantId, r: &RosterRole) -> Result<Vec<Val>, DirectoryError> {
    Ok(vec![
        t(tenant.as_str()),
        t(&r.sourced_id),
        t(&r.user_sourced_id),
        t(&r.role_type),
        t(&r.role),
        t(&r.org_sourced_id),
        ot(&r.begin_date),
        ot(&r.end_date),
        ot(&r.user_profile),
        oi(r.date_last_modified),
        json(&r.extra)?,
    ])
}

const CLASS_COLS: &[&str] = &[
    "tenant_id",
    "sourced_id",
    "title",
    "class_code",
    "class_type",
    "location",
    "school_sourced_id",
    "course_sourced_id",
    "term_sourced_ids",
    "grades",
    "subjects",
    "subject_codes",
    "periods",
    "date_last_modified",
    "extra",
];

fn class_vals(tenant: &TenantId, c: &RosterClass) -> Result<Vec<Val>, DirectoryError> {
    Ok(vec![
        t(tenant.as_str()),
        t(&c.sourced_id),
        t(&c.title),
        ot(&c.class_code),
        t(&c.class_type),
        ot(&c.location),
        t(&c.school_sourced_id),
        ot(&c.course_sourced_id),
        json(&c.term_sourced_ids)?,
        json(&c.grades)?,
        json(&c.subjects)?,
        json(&c.subject_codes)?,
        json(&c.periods)?,
        oi(c.date_last_modified),
        json(&c.extra)?,
    ])
}

const ENROLLMENT_COLS: &[&str] = &[
    "tenant_id",
    "sourced_id",
    "class_sourced_id",
    "school_sourced_id",
    "user_sourced_id",
    "role",
    "is_primary",
    "begin_date",
    "end_date",
    "date_last_modified",
    "extra",
];

fn enrollment_vals(tenant: &TenantId, e: &RosterEnrollment) -> Result<Vec<Val>, DirectoryError> {
    Ok(vec![
        t(tenant.as_str()),
        t(&e.sourced_id),
        t(&e.class_sourced_id),
        t(&e.school_sourced_id),
        t(&e.user_sourced_id),
        t(&e.role),
        oi(e.primary.map(flag)),
        ot(&e.begin_date),
        ot(&e.end_date),
        oi(e.date_last_modified),
        json(&e.extra)?,
    ])
}

const KEYS: &[&str] = &["tenant_id", "sourced_id"];

async fn insert_import(tx: &mut Tx<'_>, import: &RosterImport) -> Result<(), DirectoryError> {
    sqlx::query(
        "INSERT INTO roster_imports (id, tenant_id, started_at, finished_at, mode, oneroster_version,
            status, users_bulk, added, updated, deactivated, conflicts, errors, report)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
    )
    .bind(&import.id)
    .bind(import.tenant.as_str())
    .bind(import.started_at)
    .bind(import.finished_at)
    .bind(&import.mode)
    .bind(import.oneroster_version.as_deref())
    .bind(&import.status)
    .bind(flag(import.users_bulk))
    .bind(import.added)
    .bind(import.updated)
    .bind(import.deactivated)
    .bind(import.conflicts)
    .bind(import.errors)
    .bind(to_json(&import.report)?)
    .execute(&mut **tx)
    .await
    .map_err(|e| DirectoryError::from_sqlx(e, || format!("roster import {}", import.id)))?;
    Ok(())
}

impl Directory {
    /// Everything of a tenant's roster, and all its accounts (for email conflicts).
    pub async fn roster_snapshot(
        &self,
        tenant: &TenantId,
    ) -> Result<RosterSnapshot, DirectoryError> {
        let t = tenant.as_str();
        let q = |sql: &'static str| sqlx::query(sql).bind(t);
        let orgs = q("SELECT * FROM roster_orgs WHERE tenant_id = $1 ORDER BY sourced_id")
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        let users = q("SELECT * FROM roster_users WHERE tenant_id = $1 ORDER BY sourced_id")
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        let roles = q("SELECT * FROM roster_roles WHERE tenant_id = $1 ORDER BY sourced_id")
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        let classes = q("SELECT * FROM roster_classes WHERE tenant_id = $1 ORDER BY sourced_id")
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        let enrollments =
            q("SELECT * FROM roster_enrollments WHERE tenant_id = $1 ORDER BY sourced_id")
                .fetch_all(&self.pool)
                .await
                .map_err(db)?;
        let accounts = q("SELECT * FROM accounts WHERE tenant_id = $1 ORDER BY created_at, id")
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        Ok(RosterSnapshot {
            orgs: orgs.iter().map(org_from_row).collect::<Result<_, _>>()?,
            users: users.iter().map(user_from_row).collect::<Result<_, _>>()?,
            roles: roles.iter().map(role_from_row).collect::<Result<_, _>>()?,
            classes: classes
                .iter()
                .map(class_from_row)
                .collect::<Result<_, _>>()?,
            enrollments: enrollments
                .iter()
                .map(enrollment_from_row)
                .collect::<Result<_, _>>()?,
            accounts: accounts
                .iter()
                .map(account_from_row)
                .collect::<Result<_, _>>()?,
        })
    }

    /// Applies a planned import and logs it, in ONE transaction: either every change and
    /// the import row are written, or (on any error) nothing is. Every account updated or
    /// referenced must belong to `changes.tenant` ([`DirectoryError::Invalid`] otherwise,
    /// nothing written).
    pub async fn apply_roster_changes(
        &self,
        changes: &RosterChanges,
    ) -> Result<(), DirectoryError> {
        let tenant = &changes.tenant;
        if changes.import.tenant != *tenant
            || changes.accounts_create.iter().any(|a| a.tenant != *tenant)
            || changes.users_upsert.iter().any(|u| u.tenant != *tenant)
        {
            return Err(DirectoryError::Invalid(
                "roster changes mention another tenant".into(),
            ));
        }
        let mut tx = self.pool.begin().await.map_err(db)?;

        let accounts = changes
            .accounts_create
            .iter()
            .map(account_vals)
            .collect::<Result<Vec<_>, _>>()?;
        insert_rows(
            self.backend(),
            &mut tx,
            "accounts",
            ACCOUNT_COLS,
            &[],
            accounts,
        )
        .await?;
        for a in &changes.accounts_update {
            let done = sqlx::query(
                "UPDATE accounts SET status = $3, email = $4, email_norm = $5, email_verified = $6,
                    name = $7, given_name = $8, family_name = $9, username = $10, roles = $11
                 WHERE id = $1 AND tenant_id = $2",
            )
            .bind(a.id.as_str())
            .bind(tenant.as_str())
            .bind(a.status.as_str())
            .bind(a.email.as_deref())
            .bind(a.email.as_deref().map(normalise_email))
            .bind(flag(a.email_verified))
            .bind(a.name.as_deref())
            .bind(a.given_name.as_deref())
            .bind(a.family_name.as_deref())
            .bind(a.username.as_deref())
            .bind(to_json(&a.roles)?)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
            if done.rows_affected() == 0 {
                return Err(DirectoryError::NotFound {
                    what: format!("account {} in tenant {tenant}", a.id),
                });
            }
        }

        let users = changes
            .users_upsert
            .iter()
            .map(|u| user_vals(tenant, u))
            .collect::<Result<Vec<_>, _>>()?;
        insert_rows(
            self.backend(),
            &mut tx,
            "roster_users",
            USER_COLS,
            KEYS,
            users,
        )
        .await?;

        delete_rows(
            self.backend(),
            &mut tx,
            "roster_enrollments",
            tenant,
            &changes.enrollments_delete,
        )
        .await?;
        delete_rows(
            self.backend(),
            &mut tx,
            "roster_roles",
            tenant,
            &changes.roles_delete,
        )
        .await?;
        delete_rows(
            self.backend(),
            &mut tx,
            "roster_classes",
            tenant,
            &changes.classes_delete,
        )
        .await?;
        delete_rows(
            self.backend(),
            &mut tx,
            "roster_orgs",
            tenant,
            &changes.orgs_delete,
        )
        .await?;

        let orgs = changes
            .orgs_upsert
            .iter()
            .map(|o| org_vals(tenant, o))
            .collect::<Result<Vec<_>, _>>()?;
        insert_rows(self.backend(), &mut tx, "roster_orgs", ORG_COLS, KEYS, orgs).await?;
        let roles = changes
            .roles_upsert
            .iter()
            .map(|r| role_vals(tenant, r))
            .collect::<Result<Vec<_>, _>>()?;
        insert_rows(
            self.backend(),
            &mut tx,
            "roster_roles",
            ROLE_COLS,
            KEYS,
            roles,
        )
        .await?;
        let classes = changes
            .classes_upsert
            .iter()
            .map(|c| class_vals(tenant, c))
            .collect::<Result<Vec<_>, _>>()?;
        insert_rows(
            self.backend(),
            &mut tx,
            "roster_classes",
            CLASS_COLS,
            KEYS,
            classes,
        )
        .await?;
        let enrollments = changes
            .enrollments_upsert
            .iter()
            .map(|e| enrollment_vals(tenant, e))
            .collect::<Result<Vec<_>, _>>()?;
        insert_rows(
            self.backend(),
            &mut tx,
            "roster_enrollments",
            ENROLLMENT_COLS,
            KEYS,
            enrollments,
        )
        .await?;

        insert_import(&mut tx, &changes.import).await?;
        tx.commit().await.map_err(db)
    }

    /// Logs an import that wrote nothing else (a failed one).
    pub async fn record_roster_import(&self, import: &RosterImport) -> Result<(), DirectoryError> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        insert_import(&mut tx, import).await?;
        tx.commit().await.map_err(db)
    }

    /// The latest import of the tenant with status `ok`, bulk or delta.
    pub async fn last_successful_import(
        &self,
        tenant: &TenantId,
    ) -> Result<Option<RosterImport>, DirectoryError> {
        let row = sqlx::query(
            "SELECT * FROM roster_imports WHERE tenant_id = $1 AND status = 'ok'
             ORDER BY finished_at DESC, id DESC LIMIT 1",
        )
        .bind(tenant.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        row.as_ref().map(import_from_row).transpose()
    }

    /// The latest successful import whose users file was bulk: the one that decides who
    /// is on the roster.
    pub async fn last_successful_bulk_import(
        &self,
        tenant: &TenantId,
    ) -> Result<Option<RosterImport>, DirectoryError> {
        let row = sqlx::query(
            "SELECT * FROM roster_imports WHERE tenant_id = $1 AND status = 'ok' AND users_bulk = 1
             ORDER BY finished_at DESC, id DESC LIMIT 1",
        )
        .bind(tenant.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        row.as_ref().map(import_from_row).transpose()
    }

    /// The tenant's imports, newest first (at most `limit`, 1..=1000).
    pub async fn roster_imports(
        &self,
        tenant: &TenantId,
        limit: i64,
    ) -> Result<Vec<RosterImport>, DirectoryError> {
        let rows = sqlx::query(
            "SELECT * FROM roster_imports WHERE tenant_id = $1
             ORDER BY finished_at DESC, id DESC LIMIT $2",
        )
        .bind(tenant.as_str())
        .bind(limit.clamp(1, 1000))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter().map(import_from_row).collect()
    }

    /// The roster person with this sourcedId in the tenant (active or removed).
    pub async fn roster_user(
        &self,
        tenant: &TenantId,
        sourced_id: &str,
    ) -> Result<Option<RosterUser>, DirectoryError> {
        let row =
            sqlx::query("SELECT * FROM roster_users WHERE tenant_id = $1 AND sourced_id = $2")
                .bind(tenant.as_str())
                .bind(sourced_id)
                .fetch_optional(&self.pool)
                .await
                .map_err(db)?;
        row.as_ref().map(user_from_row).transpose()
    }

    /// The tenant's roster orgs of type `school`, by name.
    pub async fn roster_schools(
        &self,
        tenant: &TenantId,
    ) -> Result<Vec<RosterOrg>, DirectoryError> {
        let rows = sqlx::query(
            "SELECT * FROM roster_orgs WHERE tenant_id = $1 AND org_type = 'school' ORDER BY name, sourced_id",
        )
        .bind(tenant.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter().map(org_from_row).collect()
    }

    /// The roster person driving this account, if any.
    pub async fn roster_user_for_account(
        &self,
        account: &AccountId,
    ) -> Result<Option<RosterUser>, DirectoryError> {
        let row = sqlx::query("SELECT * FROM roster_users WHERE account_id = $1")
            .bind(account.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        row.as_ref().map(user_from_row).transpose()
    }

    /// Roster people of the tenant with this email (normalised), by sourcedId.
    pub async fn roster_users_by_email(
        &self,
        tenant: &TenantId,
        email: &str,
    ) -> Result<Vec<RosterUser>, DirectoryError> {
        let rows = sqlx::query(
            "SELECT * FROM roster_users WHERE tenant_id = $1 AND email_norm = $2 ORDER BY sourced_id",
        )
        .bind(tenant.as_str())
        .bind(normalise_email(email))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter().map(user_from_row).collect()
    }

    /// The enrollments of a roster person, by sourcedId.
    pub async fn roster_enrollments_for_user(
        &self,
        tenant: &TenantId,
        user_sourced_id: &str,
    ) -> Result<Vec<RosterEnrollment>, DirectoryError> {
        let rows = sqlx::query(
            "SELECT * FROM roster_enrollments WHERE tenant_id = $1 AND user_sourced_id = $2
             ORDER BY sourced_id",
        )
        .bind(tenant.as_str())
        .bind(user_sourced_id)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter().map(enrollment_from_row).collect()
    }
}
