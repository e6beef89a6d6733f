//! Classroom actions in the admin API (`/admin/api/classroom/...`, JSON, in the OpenAPI
//! document): the classes a caller may act on, a class's (or school's) learners with the
//! status of their sign-in code and QR badge (never a code in a list), one learner's code
//! (audited), code resets (one learner, one shared code for a class, a new code each), the
//! CSV download, and badge revocation.
//!
//! Who may call: an IT admin (an `it_admin` account's token, or a client-credentials token
//! with `homeroom:admin`) for every class and school of its tenant; a teacher or lead
//! teacher (their own access token) under exactly the rule of the teacher pages
//! ([`crate::classroom::resolve_scope`]): anything else is 403 `classroom.not_your_class`
//! and nothing changes. Bad input is 4xx JSON with the field and the reason; nothing is
//! changed. Every show, reset, download and revocation is the same audit event as on the
//! teacher pages, naming who did it.

use crate::AppState;
use crate::admin::{ADMIN_SCOPE, ApiError, CLASSROOM_SCOPE, api_error};
use crate::audit::{self, Ev};
use crate::badges::{self, RevokeError};
use crate::classroom::{self, ResetError, Scope, ScopeError, Who};
use axum::Router;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use homeroom_core::{AccountId, Role, TenantId};
use homeroom_directory::AccountStatus;
use http::{HeaderMap, StatusCode, header};
use serde::{Deserialize, Serialize};
use utoipa::{OpenApi, ToSchema};

/// Who calls a classroom endpoint.
struct Caller {
    tenant: TenantId,
    /// `account:<id>` or `client:<id>`, for the audit log.
    actor: String,
    account: Option<AccountId>,
    /// Schools the account is lead teacher of.
    lead_of: Vec<String>,
    /// IT: the whole tenant.
    it: bool,
}

impl Caller {
    fn who(&self) -> Who<'_> {
        Who {
            tenant: &self.tenant,
            account: self.account.as_ref(),
            lead_of: &self.lead_of,
            it: self.it,
        }
    }
    fn ev(&self) -> Ev {
        Ev {
            tenant: Some(self.tenant.clone()),
            account: self.account.clone(),
            ..Default::default()
        }
    }
}

fn internal(e: impl std::fmt::Display) -> Response {
    tracing::error!(error = %e, "admin API (classroom) internal error");
    api_error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal_error",
        None,
        "internal error; see the server log",
    )
}

fn bad(field: &str, reason: &str) -> Response {
    api_error(
        StatusCode::BAD_REQUEST,
        "invalid_request",
        Some(field),
        reason,
    )
}

fn forbidden(reason: &str) -> Response {
    api_error(StatusCode::FORBIDDEN, "forbidden", None, reason)
}

/// A catalogue refusal as JSON: the catalogue code as `error`, its status.
fn catalogue(err: &homeroom_core::LoginError, field: Option<&str>, reason: &str) -> Response {
    let status = StatusCode::from_u16(err.http_status()).unwrap_or(StatusCode::FORBIDDEN);
    api_error(status, err.code(), field, reason)
}

/// Authenticates a classroom call: IT (tenant-wide) or a teacher (their classes).
async fn caller(state: &AppState, headers: &HeaderMap) -> Result<Caller, Response> {
    let token = match headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        Some(h) if h.len() > 7 && h[..7].eq_ignore_ascii_case("bearer ") => h[7..].trim(),
        _ => {
            return Err(api_error(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                None,
                "send an admin or teacher access token as Bearer",
            ));
        }
    };
    let Some(active) = crate::tokens::validate_access_token(state, token).await else {
        return Err(api_error(
            StatusCode::UNAUTHORIZED,
            "invalid_token",
            None,
            "the access token is invalid, expired or revoked",
        ));
    };
    let subject = active.family.account.clone();
    let scope = active.claims["scope"].as_str().unwrap_or("");
    if subject.as_str().starts_with("client:") {
        if !scope.split(' ').any(|s| s == ADMIN_SCOPE) {
            return Err(forbidden("the token lacks the homeroom:admin scope"));
        }
        return Ok(Caller {
            tenant: active.family.tenant.clone(),
            actor: subject.to_string(),
            account: None,
            lead_of: Vec::new(),
            it: true,
        });
    }
    // A person's token must have been issued for this API (an app that received a
    // teacher's sign-in token cannot reset the class's codes with it).
    if !scope
        .split(' ')
        .any(|s| s == ADMIN_SCOPE || s == CLASSROOM_SCOPE)
    {
        return Err(forbidden(
            "the token lacks the homeroom:classroom (or homeroom:admin) scope",
        ));
    }
    let account = match state.directory.get_account(&subject).await {
        Ok(Some(a)) if a.status == AccountStatus::Active => a,
        Ok(_) => return Err(forbidden("the account is not active")),
        Err(e) => return Err(internal(e)),
    };
    let it = account.roles.contains(&Role::ItAdmin);
    let lead_of = if !it && account.roles.contains(&Role::SchoolAdmin) {
        match state.directory.roster_user_for_account(&account.id).await {
            Ok(Some(u)) => u.org_sourced_ids,
            Ok(None) => Vec::new(),
            Err(e) => return Err(internal(e)),
        }
    } else {
        Vec::new()
    };
    if !it && lead_of.is_empty() {
        let teaches = match state
            .directory
            .classes_of_account(&account.id, "teacher")
            .await
        {
            Ok(cs) => !cs.is_empty(),
            Err(e) => return Err(internal(e)),
        };
        if !teaches {
            return Err(forbidden(
                "the account is neither an it_admin, a lead teacher nor a teacher of a class",
            ));
        }
    }
    Ok(Caller {
        tenant: account.tenant.clone(),
        actor: format!("account:{}", account.id),
        account: Some(account.id),
        lead_of,
        it,
    })
}

macro_rules! caller {
    ($state:expr, $headers:expr) => {
        match caller(&$state, &$headers).await {
            Ok(c) => c,
            Err(r) => return r,
        }
    };
}

/// The scope `{kind}/{id}` for this caller, or the JSON refusal.
async fn scope_for(state: &AppState, c: &Caller, kind: &str, id: &str) -> Result<Scope, Response> {
    if !matches!(kind, "class" | "school") {
        return Err(bad("kind", "class or school"));
    }
    if id.is_empty() || id.len() > 256 {
        return Err(bad("id", "a roster sourcedId of 1 to 256 characters"));
    }
    classroom::resolve_scope(state, &c.who(), kind, id)
        .await
        .map_err(|e| match e {
            ScopeError::NotYours(d) => catalogue(
                &homeroom_core::LoginError::ClassroomNotYourClass,
                Some("id"),
                &d,
            ),
            ScopeError::NotFound(_) => api_error(
                StatusCode::NOT_FOUND,
                "not_found",
                Some("id"),
                &format!("no such {kind} in your tenant"),
            ),
            ScopeError::Directory(e) => internal(e),
        })
}

/// A learner not in scope: 403 for a teacher (as the pages), 404 for IT.
fn learner_not_in_scope(c: &Caller, detail: &str) -> Response {
    if c.it {
        api_error(
            StatusCode::NOT_FOUND,
            "not_found",
            Some("learner"),
            "no such learner in this class or school",
        )
    } else {
        catalogue(
            &homeroom_core::LoginError::ClassroomNotYourClass,
            Some("learner"),
            detail,
        )
    }
}

#[derive(Serialize, ToSchema)]
pub struct ClassOut {
    /// The class's roster sourcedId.
    pub id: String,
    pub title: String,
    /// The school's roster sourcedId.
    pub school: String,
}

/// The classes the caller may act on: every class of the tenant for IT; a teacher's own
/// classes; for a lead teacher, also every class of their schools.
#[utoipa::path(get, path = "/admin/api/classroom/classes", tag = "classroom", responses((status = 200, body = [ClassOut]), (status = 401, body = ApiError), (status = 403, body = ApiError)), security(("bearer" = [])))]
pub async fn classes(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let c = caller!(state, headers);
    let dir = &state.directory;
    let mut list = if c.it {
        match dir.classes_of_tenant(&c.tenant).await {
            Ok(l) => l,
            Err(e) => return internal(e),
        }
    } else {
        let mut l = match &c.account {
            Some(a) => match dir.classes_of_account(a, "teacher").await {
                Ok(l) => l,
                Err(e) => return internal(e),
            },
            None => Vec::new(),
        };
        for school in &c.lead_of {
            match dir.classes_of_school(&c.tenant, school).await {
                Ok(cs) => l.extend(cs),
                Err(e) => return internal(e),
            }
        }
        l
    };
    list.retain(|k| k.tenant == c.tenant);
    list.sort_by(|a, b| (&a.title, &a.sourced_id).cmp(&(&b.title, &b.sourced_id)));
    list.dedup_by(|a, b| a.sourced_id == b.sourced_id);
    axum::Json(
        list.into_iter()
            .map(|k| ClassOut {
                id: k.sourced_id,
                title: k.title,
                school: k.school_sourced_id,
            })
            .collect::<Vec<_>>(),
    )
    .into_response()
}

#[derive(Serialize, ToSchema)]
pub struct LearnerOut {
    /// The learner's roster sourcedId.
    pub user: String,
    pub username: String,
    pub name: String,
    pub account: Option<String>,
    /// Whether the learner has a sign-in code (the code itself: the `code` endpoint).
    pub has_code: bool,
    pub code_set_at: Option<i64>,
    pub code_set_by: Option<String>,
    /// Failed code attempts counted toward the lockout.
    pub failed_attempts: i64,
    /// Whether a QR badge of the learner is live.
    pub has_badge: bool,
    pub badge_issued_at: Option<i64>,
    pub badge_last_used_at: Option<i64>,
}

/// The learners of a class (`kind` = `class`) or, lead teacher or IT, a school
/// (`kind` = `school`), with the status of their code and badge. Never the codes.
#[utoipa::path(get, path = "/admin/api/classroom/{kind}/{id}/learners", tag = "classroom", params(("kind" = String, Path, description = "class or school"), ("id" = String, Path, description = "roster sourcedId")), responses((status = 200, body = [LearnerOut]), (status = 400, body = ApiError), (status = 403, body = ApiError), (status = 404, body = ApiError), (status = 401, body = ApiError)), security(("bearer" = [])))]
pub async fn learners(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((kind, id)): Path<(String, String)>,
) -> Response {
    let c = caller!(state, headers);
    let s = match scope_for(&state, &c, &kind, &id).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let mut out = Vec::with_capacity(s.learners.len());
    for m in &s.learners {
        let (code, badge) = match &m.account {
            Some(a) => {
                let code = match state.directory.sign_in_code(a).await {
                    Ok(c) => c,
                    Err(e) => return internal(e),
                };
                let badge = match state.directory.live_badge(a).await {
                    Ok(b) => b,
                    Err(e) => return internal(e),
                };
                (code, badge)
            }
            None => (None, None),
        };
        out.push(LearnerOut {
            user: m.user_sourced_id.clone(),
            username: m.username.clone(),
            name: m.name(),
            account: m.account.as_ref().map(ToString::to_string),
            has_code: code.is_some(),
            code_set_at: code.as_ref().map(|c| c.set_at),
            code_set_by: code.as_ref().map(|c| c.set_by.clone()),
            failed_attempts: code.as_ref().map(|c| c.failed_attempts).unwrap_or(0),
            has_badge: badge.is_some(),
            badge_issued_at: badge.as_ref().map(|b| b.created_at),
            badge_last_used_at: badge.as_ref().and_then(|b| b.last_used_at),
        });
    }
    axum::Json(out).into_response()
}

#[derive(Serialize, ToSchema)]
pub struct CodeOut {
    pub user: String,
    pub username: String,
    /// The current sign-in code; null when the learner has none.
    pub code: Option<String>,
}

/// One learner's current sign-in code (audited as `classroom.code_shown`).
#[utoipa::path(get, path = "/admin/api/classroom/{kind}/{id}/learners/{user}/code", tag = "classroom", params(("kind" = String, Path, description = "class or school"), ("id" = String, Path, description = "roster sourcedId"), ("user" = String, Path, description = "the learner's roster sourcedId")), responses((status = 200, body = CodeOut), (status = 403, body = ApiError), (status = 404, body = ApiError), (status = 400, body = ApiError), (status = 401, body = ApiError)), security(("bearer" = [])))]
pub async fn show_code(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((kind, id, user)): Path<(String, String, String)>,
) -> Response {
    let c = caller!(state, headers);
    let s = match scope_for(&state, &c, &kind, &id).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let Some(m) = s.learner(&user) else {
        return learner_not_in_scope(&c, &format!("learner {user:?} is not in {kind} {id}"));
    };
    let Some(account) = m.account.clone() else {
        return learner_not_in_scope(&c, &format!("learner {user:?} has no account"));
    };
    if !state.settings.classroom.enabled_for(&s.tenant) {
        return disabled(&s);
    }
    let code = match classroom::current_code(&state, &account).await {
        Ok(code) => code,
        Err(_) => return internal("sign-in code lookup failed"),
    };
    if code.is_some() {
        audit::record(
            &state,
            None,
            "classroom.code_shown",
            c.ev().detail(serde_json::json!({
                "by": c.actor, "learner": account.as_str(), "scope": s.kind, "id": s.id, "via": "admin_api"
            })),
        );
    }
    axum::Json(CodeOut {
        user: m.user_sourced_id.clone(),
        username: m.username.clone(),
        code,
    })
    .into_response()
}

fn disabled(s: &Scope) -> Response {
    catalogue(
        &homeroom_core::LoginError::ClassroomCodesDisabled,
        None,
        &format!("sign-in codes are not enabled for tenant {}", s.tenant),
    )
}

/// A code reset.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetIn {
    /// `learner` (with `learner`), `shared` (class only: one new code for everyone) or
    /// `each` (a new code per learner).
    pub mode: String,
    /// The learner's roster sourcedId, for `mode` = `learner`.
    pub learner: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct ResetOut {
    pub mode: String,
    /// Accounts that got a new code (their QR badges were revoked too).
    pub accounts: Vec<String>,
}

/// New sign-in codes: one learner, one shared code for a class, or a new code each. All or
/// nothing; the learners' QR badges are revoked; audited (`classroom.codes_reset`).
#[utoipa::path(post, path = "/admin/api/classroom/{kind}/{id}/reset", tag = "classroom", params(("kind" = String, Path, description = "class or school"), ("id" = String, Path, description = "roster sourcedId")), request_body = ResetIn, responses((status = 200, body = ResetOut), (status = 400, body = ApiError), (status = 403, body = ApiError), (status = 404, body = ApiError), (status = 401, body = ApiError)), security(("bearer" = [])))]
pub async fn reset(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((kind, id)): Path<(String, String)>,
    body: Result<axum::Json<ResetIn>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let c = caller!(state, headers);
    let axum::Json(r) = match body {
        Ok(b) => b,
        Err(e) => return bad("body", &e.body_text()),
    };
    let s = match scope_for(&state, &c, &kind, &id).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    match (r.mode.as_str(), &r.learner) {
        ("learner", None) => return bad("learner", "required when mode is learner"),
        ("learner", Some(_)) | ("each", None) => {}
        ("shared", None) if s.kind == "class" => {}
        ("shared", None) => return bad("mode", "shared is for a class, not a school"),
        ("shared" | "each", Some(_)) => {
            return bad("learner", "only with mode learner");
        }
        _ => return bad("mode", "learner, shared or each"),
    }
    let learner = r.learner.as_deref().unwrap_or("");
    match classroom::reset_codes(&state, &s, &r.mode, learner, &c.actor, c.ev()).await {
        Ok(accounts) => axum::Json(ResetOut {
            mode: r.mode,
            accounts: accounts.iter().map(ToString::to_string).collect(),
        })
        .into_response(),
        Err(ResetError::Disabled) => disabled(&s),
        Err(ResetError::NotInScope(d)) => learner_not_in_scope(&c, &d),
        Err(ResetError::BadMode(d)) => bad("mode", &d),
        Err(ResetError::Internal(e)) => internal(e),
    }
}

/// The CSV of a class, or (lead teacher or IT) a school: username, name, sign-in code,
/// parent access code; formula cells neutralised. Audited (`classroom.codes_downloaded`).
#[utoipa::path(get, path = "/admin/api/classroom/{kind}/{id}/codes.csv", tag = "classroom", params(("kind" = String, Path, description = "class or school"), ("id" = String, Path, description = "roster sourcedId")), responses((status = 200, content_type = "text/csv", body = String), (status = 403, body = ApiError), (status = 404, body = ApiError), (status = 400, body = ApiError), (status = 401, body = ApiError)), security(("bearer" = [])))]
pub async fn download(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((kind, id)): Path<(String, String)>,
) -> Response {
    let c = caller!(state, headers);
    let s = match scope_for(&state, &c, &kind, &id).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let rows = match classroom::rows(&state, &s).await {
        Ok(r) => r,
        Err(_) => return internal("sign-in codes could not be read"),
    };
    audit::record(
        &state,
        None,
        "classroom.codes_downloaded",
        c.ev().detail(serde_json::json!({
            "by": c.actor, "scope": s.kind, "id": s.id, "learners": rows.len(), "via": "admin_api"
        })),
    );
    let parents = classroom::parent_codes(&state, &s, &c.actor).await;
    classroom::csv_response(&s, classroom::codes_csv(&rows, &parents))
}

/// A badge revocation.
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct RevokeIn {
    /// One learner's roster sourcedId; absent: every learner of the class or school.
    pub learner: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct RevokeOut {
    /// Badges revoked.
    pub revoked: u64,
}

/// Revokes QR badges: one learner's, or every learner's of the class or school. Audited
/// (`classroom.badges_revoked`).
#[utoipa::path(post, path = "/admin/api/classroom/{kind}/{id}/badges/revoke", tag = "classroom", params(("kind" = String, Path, description = "class or school"), ("id" = String, Path, description = "roster sourcedId")), request_body = RevokeIn, responses((status = 200, body = RevokeOut), (status = 400, body = ApiError), (status = 403, body = ApiError), (status = 404, body = ApiError), (status = 401, body = ApiError)), security(("bearer" = [])))]
pub async fn revoke_badges(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((kind, id)): Path<(String, String)>,
    body: Result<axum::Json<RevokeIn>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let c = caller!(state, headers);
    let axum::Json(r) = match body {
        Ok(b) => b,
        Err(e) => return bad("body", &e.body_text()),
    };
    if r.learner.as_ref().is_some_and(|l| l.is_empty()) {
        return bad("learner", "a roster sourcedId, or absent for everyone");
    }
    let s = match scope_for(&state, &c, &kind, &id).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    match badges::revoke(&state, &s, r.learner.as_deref(), &c.actor, c.ev()).await {
        Ok(n) => axum::Json(RevokeOut { revoked: n }).into_response(),
        Err(RevokeError::NotInScope(d)) => learner_not_in_scope(&c, &d),
        Err(RevokeError::Internal(e)) => internal(e),
    }
}

/// The classroom part of the admin API's OpenAPI document (merged into
/// [`crate::admin::ApiDoc`]'s at `/admin/api/openapi.json`).
#[derive(OpenApi)]
#[openapi(paths(classes, learners, show_code, reset, download, revoke_badges))]
pub struct ClassroomApiDoc;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/admin/api/classroom/classes", get(classes))
        .route("/admin/api/classroom/{kind}/{id}/learners", get(learners))
        .route(
            "/admin/api/classroom/{kind}/{id}/learners/{user}/code",
            get(show_code),
        )
        .route("/admin/api/classroom/{kind}/{id}/reset", post(reset))
        .route("/admin/api/classroom/{kind}/{id}/codes.csv", get(download))
        .route(
            "/admin/api/classroom/{kind}/{id}/badges/revoke",
            post(revoke_badges),
        )
}
