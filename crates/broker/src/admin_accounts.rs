//! Accounts created by hand by IT (`POST /admin/api/accounts`, and the console's "Add
//! account" page), and adding a role to an existing account
//! (`POST /admin/api/accounts/{id}/roles`).
//!
//! Before anything is written, the email is looked up everywhere it may already live,
//! including what the users list hides: accounts of any status and role (archived,
//! suspended, guardian), pending invitations, roster records without an account or no
//! longer active, and accounts whose email differs only in case, dots, `+tag` or domain
//! alias (the troubleshooter's [`crate::troubleshoot::email_key`]). Each place found comes
//! with the fix (restore, add the role, link to the roster record, resend the invitation)
//! instead of a bare "email already in use"; nothing is created then (409).

use crate::AppState;
use crate::admin::{self, Admin, ApiError};
use crate::troubleshoot::email_key;
use axum::Router;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use homeroom_core::{AccountId, Role, TenantId};
use homeroom_directory::{Account, AccountStatus, DirectoryError, RosterUserStatus};
use http::{HeaderMap, StatusCode, header};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// An account IT creates by hand.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AccountCreate {
    /// `student`, `teacher`, `staff`, `school_admin`, `district_admin`, `guardian` or `it_admin`.
    pub role: String,
    pub email: String,
    pub name: String,
    /// The roster sourcedId of the person's school (an org of type `school`), if any.
    pub school: Option<String>,
    /// Mail an invitation to set a Homeroom password (default true).
    #[serde(default = "yes")]
    pub send_invitation: bool,
    /// Create the account for this roster record (the "link" fix offered when the roster
    /// has the person but no account yet).
    pub link_roster: Option<String>,
}

fn yes() -> bool {
    true
}

/// One place where the email is already in use, and the fix offered.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EmailInUse {
    /// `archived_account`, `suspended_account`, `guardian_account`, `other_role`,
    /// `pending_invitation`, `same_account`, `look_alike`, `roster_not_imported` or
    /// `roster_inactive`.
    pub kind: String,
    /// Where, in words.
    pub found: String,
    pub account: Option<String>,
    pub account_name: Option<String>,
    pub account_email: Option<String>,
    pub roles: Vec<String>,
    pub status: Option<String>,
    pub roster_sourced_id: Option<String>,
    /// `restore`, `add_role`, `link`, `resend_invitation`, `open` or `fix_roster`.
    pub fix: String,
    /// The fix, in words.
    pub fix_label: String,
    /// The admin API call that applies the fix, when there is one.
    pub fix_api: Option<String>,
}

/// The refusal of `POST /admin/api/accounts` when the email is in use.
#[derive(Debug, Serialize, ToSchema)]
pub struct EmailInUseError {
    pub error: String,
    pub field: String,
    pub reason: String,
    pub found: Vec<EmailInUse>,
}

/// The created account (and the invitation link when one was sent).
#[derive(Serialize, ToSchema)]
pub struct AccountCreated {
    pub account: admin::AccountOut,
    pub school: Option<String>,
    pub invitation: Option<admin::LinkOut>,
}

/// Why an account could not be created.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    #[error("the email is already in use")]
    InUse(Vec<EmailInUse>),
    #[error(transparent)]
    Directory(#[from] DirectoryError),
    #[error("invitation: {0}")]
    Invitation(String),
    /// Another request is creating an account with this email at this moment (a double
    /// click, two admins, two instances): only one of them may check and create.
    #[error("another request is creating an account with this email")]
    Busy,
    #[error("session store: {0}")]
    Store(String),
}

/// How long a claim on an email for account creation lasts if its request never finishes
/// (a crashed instance); a finished request releases it at once.
const CREATE_CLAIM_SECS: u64 = 30;

/// The reason given with [`CreateError::Busy`].
pub const BUSY_REASON: &str = "another request is creating an account with this email right now; nothing was created by this one. Look the email up; if it is still missing, try again";

fn invalid(field: &str, reason: &str) -> CreateError {
    CreateError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

/// A plausible address: one `@`, a local part, a dotted domain, no spaces, at most 254.
pub fn email_ok(e: &str) -> bool {
    let Some((local, domain)) = e.split_once('@') else {
        return false;
    };
    e.len() <= 254
        && !local.is_empty()
        && !domain.contains('@')
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !e
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "<>\"(),;:\\[]".contains(c))
}

fn role_label(r: &Role) -> String {
    r.to_string()
}

/// What the fix of an existing account is, for someone who should have `role`.
fn account_fix(a: &Account, role: Role, invitation_pending: bool, look_alike: bool) -> EmailInUse {
    let id = a.id.to_string();
    let roles: Vec<String> = a.roles.iter().map(role_label).collect();
    let who = format!(
        "{} ({}, {})",
        a.name.clone().unwrap_or_else(|| "no name".into()),
        a.email.clone().unwrap_or_default(),
        if roles.is_empty() {
            "no role".into()
        } else {
            roles.join(", ")
        }
    );
    let prefix = if look_alike {
        "An account whose email differs only in case, dots, +tag or domain alias: "
    } else {
        ""
    };
    let (kind, found, fix, fix_label, fix_api) = if a.status != AccountStatus::Active {
        let k = if a.status == AccountStatus::Archived {
            "archived_account"
        } else {
            "suspended_account"
        };
        (
            k,
            format!(
                "{prefix}an {} account {who}; the users list hides it",
                a.status.as_str()
            ),
            "restore",
            if a.roles.contains(&role) {
                "Restore (activate) this account".to_owned()
            } else {
                format!("Restore this account, then add the role {role}")
            },
            Some(format!("POST /admin/api/accounts/{id}/status")),
        )
    } else if !a.roles.contains(&role) {
        let guardian = a.roles.contains(&Role::Guardian);
        (
            if guardian {
                "guardian_account"
            } else {
                "other_role"
            },
            format!(
                "{prefix}{} account {who} without the role {role}",
                if guardian { "a guardian" } else { "an" }
            ),
            "add_role",
            format!("Add the role {role} to this account"),
            Some(format!("POST /admin/api/accounts/{id}/roles")),
        )
    } else if invitation_pending {
        (
            "pending_invitation",
            format!("{prefix}an account {who} invited but not signed in yet (invitation pending)"),
            "resend_invitation",
            "Resend the invitation".to_owned(),
            Some(format!("POST /admin/api/accounts/{id}/invitation")),
        )
    } else {
        (
            if look_alike {
                "look_alike"
            } else {
                "same_account"
            },
            format!("{prefix}the account {who} already exists with this role"),
            "open",
            "Open this account".to_owned(),
            None,
        )
    };
    EmailInUse {
        kind: kind.into(),
        found,
        account: Some(id),
        account_name: a.name.clone(),
        account_email: a.email.clone(),
        roles,
        status: Some(a.status.as_str().into()),
        roster_sourced_id: None,
        fix: fix.into(),
        fix_label,
        fix_api,
    }
}

/// Every place of the tenant where `email` (or an address equal to it up to case, dots,
/// `+tag` or domain alias) is in use, each with its fix, for someone who should be `role`.
pub async fn email_in_use(
    state: &AppState,
    tenant: &TenantId,
    email: &str,
    role: Role,
) -> Result<Vec<EmailInUse>, DirectoryError> {
    let dir = &state.directory;
    let mut out = Vec::new();
    let mut seen: Vec<AccountId> = Vec::new();
    let key = email_key(email);
    let mut accounts: Vec<(Account, bool)> = dir
        .find_accounts_by_email(tenant, email)
        .await?
        .into_iter()
        .map(|a| (a, false))
        .collect();
    // Look-alikes: accounts whose dot-less address starts with this one's dot-less local
    // part (before any +tag), compared by the troubleshooter's key.
    let stem: String = email
        .split('@')
        .next()
        .unwrap_or("")
        .split('+')
        .next()
        .unwrap_or("")
        .to_owned();
    for a in dir.accounts_by_email_stem(tenant, &stem, 200).await? {
        let alike = a.email.as_deref().is_some_and(|e| email_key(e) == key);
        if alike && !accounts.iter().any(|(x, _)| x.id == a.id) {
            accounts.push((a, true));
        }
    }
    for (a, look_alike) in accounts {
        let pending = match state.directory.local_credential(&a.id).await? {
            Some(c) if !c.password_set() => !dir.invitations_for_account(&a.id).await?.is_empty(),
            _ => false,
        };
        seen.push(a.id.clone());
        out.push(account_fix(&a, role, pending, look_alike));
    }
    for r in dir.roster_users_by_email(tenant, email).await? {
        if r.account.as_ref().is_some_and(|id| seen.contains(id))
            && r.status == RosterUserStatus::Active
            && r.enabled
        {
            continue;
        }
        let name = format!("{} {}", r.given_name, r.family_name);
        let (kind, found, fix, fix_label) = if r.status == RosterUserStatus::Removed || !r.enabled {
            (
                "roster_inactive",
                format!(
                    "a roster record {} ({name}) that is {}",
                    r.sourced_id,
                    if r.status == RosterUserStatus::Removed {
                        "not in the last roster import (removed)"
                    } else {
                        "disabled in the roster (enabledUser=false)"
                    }
                ),
                "fix_roster",
                "Fix the record in the SIS, then import the roster again".to_owned(),
            )
        } else {
            (
                "roster_not_imported",
                format!(
                    "a roster record {} ({name}) with no Homeroom account yet",
                    r.sourced_id
                ),
                "link",
                "Create the account linked to this roster record".to_owned(),
            )
        };
        out.push(EmailInUse {
            kind: kind.into(),
            found,
            account: r.account.as_ref().map(ToString::to_string),
            account_name: Some(name),
            account_email: r.email.clone(),
            roles: r.roles.iter().map(role_label).collect(),
            status: Some(r.status.as_str().into()),
            roster_sourced_id: Some(r.sourced_id.clone()),
            fix: fix.into(),
            fix_label,
            fix_api: (fix == "link").then(|| "POST /admin/api/accounts with link_roster".into()),
        });
    }
    Ok(out)
}

/// Checks and creates an account by hand; nothing is written on any problem.
pub async fn create_account(
    state: &AppState,
    admin: &Admin,
    c: &AccountCreate,
) -> Result<AccountCreated, CreateError> {
    let role: Role = c
        .role
        .parse()
        .map_err(|_| invalid("role", "unknown role; expected student, teacher, staff, school_admin, district_admin, guardian or it_admin"))?;
    let email = homeroom_directory::normalise_email(&c.email);
    if !email_ok(&email) {
        return Err(invalid("email", "not an email address (name@school.org)"));
    }
    let name = c.name.trim();
    if name.is_empty() || name.len() > 100 {
        return Err(invalid("name", "must be 1 to 100 characters"));
    }
    let school = match c.school.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => {
            let schools = state.directory.roster_schools(&admin.tenant).await?;
            match schools.into_iter().find(|o| o.sourced_id == s) {
                Some(o) => Some(o.sourced_id),
                None => {
                    return Err(invalid(
                        "school",
                        "not a school of your tenant's roster (use its sourcedId)",
                    ));
                }
            }
        }
    };
    // Checking where the email lives and creating the account are two steps: a claim on
    // (tenant, email), shared by every instance, keeps a second request for the same email
    // from passing the check before the first has created its account.
    let claim = format!(
        "acctnew:{}:{}",
        admin.tenant,
        homeroom_core::crypto::sha256_hex(&email)
    );
    match state
        .sessions
        .put_json_if_absent(&claim, &admin.actor, CREATE_CLAIM_SECS)
        .await
    {
        Ok(true) => {}
        Ok(false) => return Err(CreateError::Busy),
        Err(e) => return Err(CreateError::Store(e.to_string())),
    }
    let created = create_claimed(state, admin, c, role, email, name, school).await;
    if let Err(e) = state.sessions.delete(&claim).await {
        tracing::warn!(error = %e, "could not release an account-creation claim; it expires by itself");
    }
    created
}

/// [`create_account`] once the email is claimed: where it lives, then the account.
async fn create_claimed(
    state: &AppState,
    admin: &Admin,
    c: &AccountCreate,
    role: Role,
    email: String,
    name: &str,
    school: Option<String>,
) -> Result<AccountCreated, CreateError> {
    let found = email_in_use(state, &admin.tenant, &email, role).await?;
    let link = c
        .link_roster
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty());
    match link {
        None if !found.is_empty() => return Err(CreateError::InUse(found)),
        None => {}
        Some(sid) => {
            // Only the "link" fix itself is allowed through, and only when it is the sole
            // place the email lives.
            let only_link = found.len() == 1
                && found[0].fix == "link"
                && found[0].roster_sourced_id.as_deref() == Some(sid);
            if !only_link {
                if found.iter().any(|f| f.fix != "link") {
                    return Err(CreateError::InUse(found));
                }
                return Err(invalid(
                    "link_roster",
                    "not a roster record with this email and no account",
                ));
            }
        }
    }
    let tenant = state.directory.get_tenant(&admin.tenant).await?;
    let domain = email.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
    let verified = tenant.is_some_and(|t| t.domains.iter().any(|d| d == domain));
    let account = Account {
        id: AccountId::generate(),
        tenant: admin.tenant.clone(),
        status: AccountStatus::Active,
        email: Some(email.clone()),
        email_verified: verified,
        name: Some(name.to_owned()),
        given_name: None,
        family_name: None,
        username: None,
        roles: vec![role],
        created_at: state.now(),
        last_sign_in_at: None,
        sign_in_count: 0,
    };
    match link {
        Some(sid) => {
            state
                .directory
                .create_account_for_roster_user(&account, sid)
                .await?
        }
        None => state.directory.create_account(&account, None).await?,
    }
    admin::changed(
        state,
        admin,
        "admin.account_created",
        serde_json::json!({
            "account": account.id, "role": role.to_string(), "school": school,
            "roster": link, "invitation": c.send_invitation,
        }),
    );
    let invitation = if c.send_invitation {
        match crate::local::invite(state, &account.id, &admin.actor).await {
            Ok(l) => {
                admin::changed(
                    state,
                    admin,
                    "admin.invitation_issued",
                    serde_json::json!({"account": account.id}),
                );
                Some(admin::LinkOut {
                    url: l.url,
                    created_at: l.created_at,
                    expires_at: l.expires_at,
                })
            }
            Err(e) => return Err(CreateError::Invitation(e.to_string())),
        }
    } else {
        None
    };
    Ok(AccountCreated {
        account: admin::account_out(state, account).await,
        school,
        invitation,
    })
}

/// Adds a role to an account (the fix for "an account with another role"); audited.
/// Returns false when the account had the role already.
pub async fn add_role(
    state: &AppState,
    admin: &Admin,
    a: &Account,
    role: Role,
) -> Result<bool, DirectoryError> {
    if a.roles.contains(&role) {
        return Ok(false);
    }
    let mut roles = a.roles.clone();
    roles.push(role);
    state.directory.set_account_roles(&a.id, &roles).await?;
    admin::changed(
        state,
        admin,
        "admin.account_role_added",
        serde_json::json!({"account": a.id, "role": role.to_string()}),
    );
    Ok(true)
}

fn json_error(status: StatusCode, error: &str, field: Option<&str>, reason: &str) -> Response {
    let mut r = (
        status,
        axum::Json(ApiError {
            error: error.into(),
            field: field.map(str::to_owned),
            reason: reason.into(),
        }),
    )
        .into_response();
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    r
}

fn internal(e: impl std::fmt::Display) -> Response {
    tracing::error!(error = %e, "admin API internal error");
    json_error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal_error",
        None,
        "internal error; see the server log",
    )
}

/// Creates an account by hand. When the email is already in use (in any account, role or
/// status, a pending invitation, or the roster), 409 lists where, each with its fix, and
/// nothing is created. When another request is creating an account with the same email
/// at that moment, 409 `create_in_progress` with an empty `found`.
#[utoipa::path(post, path = "/admin/api/accounts", request_body = AccountCreate, responses((status = 201, body = AccountCreated), (status = 400, body = ApiError), (status = 409, body = EmailInUseError), (status = 401, body = ApiError), (status = 403, body = ApiError)), security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<axum::Json<AccountCreate>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let admin = match admin::authenticate(&state, &headers).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let axum::Json(c) = match body {
        Ok(b) => b,
        Err(e) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                Some("body"),
                &e.body_text(),
            );
        }
    };
    match create_account(&state, &admin, &c).await {
        Ok(out) => (StatusCode::CREATED, axum::Json(out)).into_response(),
        Err(CreateError::Invalid { field, reason }) => json_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            Some(&field),
            &reason,
        ),
        Err(CreateError::InUse(found)) => (
            StatusCode::CONFLICT,
            axum::Json(EmailInUseError {
                error: "email_in_use".into(),
                field: "email".into(),
                reason: format!(
                    "the email is already in use in {} place(s); each comes with its fix",
                    found.len()
                ),
                found,
            }),
        )
            .into_response(),
        Err(CreateError::Directory(DirectoryError::Conflict { .. })) => json_error(
            StatusCode::CONFLICT,
            "conflict",
            Some("link_roster"),
            "the roster record got an account meanwhile; nothing was created",
        ),
        Err(CreateError::Busy) => (
            StatusCode::CONFLICT,
            axum::Json(EmailInUseError {
                error: "create_in_progress".into(),
                field: "email".into(),
                reason: BUSY_REASON.into(),
                found: Vec::new(),
            }),
        )
            .into_response(),
        Err(e) => internal(e),
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RoleAdd {
    /// The role to add (`teacher`, ...).
    pub add: String,
}

/// Adds a role to an account of the tenant.
#[utoipa::path(post, path = "/admin/api/accounts/{id}/roles", params(("id" = String, Path, description = "Account id")), request_body = RoleAdd, responses((status = 200, body = admin::AccountOut), (status = 400, body = ApiError), (status = 404, body = ApiError), (status = 401, body = ApiError), (status = 403, body = ApiError)), security(("bearer" = [])))]
pub async fn roles(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<axum::Json<RoleAdd>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let admin = match admin::authenticate(&state, &headers).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let axum::Json(b) = match body {
        Ok(b) => b,
        Err(e) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                Some("body"),
                &e.body_text(),
            );
        }
    };
    let Ok(role) = b.add.parse::<Role>() else {
        return json_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            Some("add"),
            "unknown role",
        );
    };
    let a = match state.directory.get_account(&AccountId::new(id)).await {
        Ok(Some(a)) if a.tenant == admin.tenant => a,
        Ok(_) => {
            return json_error(
                StatusCode::NOT_FOUND,
                "not_found",
                None,
                "no such account in your tenant",
            );
        }
        Err(e) => return internal(e),
    };
    if let Err(e) = add_role(&state, &admin, &a, role).await {
        return internal(e);
    }
    match state.directory.get_account(&a.id).await {
        Ok(Some(a)) => axum::Json(admin::account_out(&state, a).await).into_response(),
        Ok(None) => internal("account vanished"),
        Err(e) => internal(e),
    }
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/admin/api/accounts", post(create))
        .route("/admin/api/accounts/{id}/roles", post(roles))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email_syntax() {
        assert!(email_ok("maya.chen@lincoln.k12.org"));
        for bad in [
            "",
            "maya",
            "maya@",
            "@x.org",
            "a b@x.org",
            "a@b@c.org",
            "a@nodot",
            "a@x.org.",
        ] {
            assert!(!email_ok(bad), "{bad}");
        }
    }
}
