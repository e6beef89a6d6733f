//! Classroom sign-in codes: short, class-scoped credentials for learners who cannot manage
//! passwords, in tenants that allow them ([`ClassroomSettings::tenants`]).
//!
//! What it owns:
//! - Sealing: a code is stored only encrypted (AES-256-GCM with the configured 32-byte
//!   key, a fresh 96-bit nonce per code, the account id as associated data so a sealed
//!   code cannot be moved to another learner), so a teacher can be shown it again.
//! - Sign-in by code (`/login/classroom`): class code + username + sign-in code, CSRF
//!   double-submit, a GCRA rate limit of its own (per address and per class code), a
//!   lockout counted atomically in the directory before the code is compared, the same
//!   answer for an unknown class, an unknown learner and a wrong code, then the
//!   pipeline's own Issue step ([`crate::pipeline::issue_for`]).
//! - Teacher pages under `/classroom`: a teacher (roster enrollment `teacher` in the class)
//!   or a lead teacher (an account with the `school_admin` role whose roster orgs include
//!   the school) can show a learner's code, generate a new one, give the whole class one
//!   shared new code or a new code each, download the class (or, lead teacher only, the
//!   school) as CSV, and print a class sheet. Anyone else is refused with
//!   `classroom.not_your_class` and nothing changes. Every show, reset, download and print
//!   is an audit event.
//! - QR badges on the class sheet live in [`crate::badges`]; this module lends it the
//!   teacher, the scope and the sheet ([`resolve_scope`], [`sheet`]).

use crate::AppState;
use crate::audit::{self, Ev};
use crate::flows::flows;
use crate::local::{csrf_ok, csrf_token, with_csrf};
use crate::middleware::ClientIp;
use crate::pages::html;
use crate::pipeline::{self, Refusal, refuse};
use crate::respond::{self, PageCtx};
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use askama::Template;
use axum::Router;
use axum::extract::{Path, Query, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use homeroom_core::crypto;
use homeroom_core::{AccountId, LoginError, RefId, Role, TenantId};
use homeroom_directory::classroom::{ClassMember, ClassroomClass};
use homeroom_directory::{Account, AccountStatus, AttemptClaim, DirectoryError};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde::Deserialize;
use std::collections::{HashMap, HashSet};

/// Letters and digits a child will not confuse (no 0/o, 1/l/i).
const CODE_ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyz23456789";
/// Class codes: upper case, same alphabet.
const CLASS_ALPHABET: &[u8] = b"ABCDEFGHJKMNPQRSTUVWXYZ23456789";

/// The 32-byte key codes are sealed with. Never printed.
#[derive(Clone)]
pub struct CodeKey([u8; 32]);

impl CodeKey {
    pub fn new(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }
    /// From 64 hex digits or standard base64 of 32 bytes.
    pub fn parse(text: &str) -> Option<Self> {
        let t = text.trim();
        let bytes = if t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()) {
            (0..32)
                .map(|i| u8::from_str_radix(&t[2 * i..2 * i + 2], 16).ok())
                .collect::<Option<Vec<u8>>>()?
        } else {
            base64::engine::general_purpose::STANDARD.decode(t).ok()?
        };
        <[u8; 32]>::try_from(bytes.as_slice()).ok().map(Self)
    }
}

impl std::fmt::Debug for CodeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CodeKey(***)")
    }
}

/// Settings of classroom sign-in codes.
#[derive(Debug, Clone)]
pub struct ClassroomSettings {
    /// Tenants whose learners may have sign-in codes.
    pub tenants: HashSet<TenantId>,
    /// The code-encryption key; without it codes are disabled everywhere.
    pub key: Option<CodeKey>,
    /// Characters of a learner's sign-in code (6).
    pub code_len: usize,
    /// Code sign-in attempts per minute per address, and per class code (20), with this burst (10).
    pub attempts_per_minute: u64,
    pub attempts_burst: u64,
    /// QR badges: where they may be used.
    pub badges: crate::badges::BadgeSettings,
}

impl Default for ClassroomSettings {
    fn default() -> Self {
        Self {
            tenants: HashSet::new(),
            key: None,
            code_len: 6,
            attempts_per_minute: 20,
            attempts_burst: 10,
            badges: Default::default(),
        }
    }
}

impl ClassroomSettings {
    /// Whether learners of `tenant` may have codes (the tenant allows it and a key is set).
    pub fn enabled_for(&self, tenant: &TenantId) -> bool {
        self.key.is_some() && self.tenants.contains(tenant)
    }
}

/// Why a code could not be sealed or opened.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("no code-encryption key configured")]
    NoKey,
    #[error("randomness unavailable")]
    Random,
    #[error("sealed code malformed or sealed with another key")]
    Open,
}

/// Seals `code` for `account`: `v1:` + base64(nonce || ciphertext).
pub fn seal(key: &CodeKey, account: &AccountId, code: &str) -> Result<String, SealError> {
    let cipher = Aes256Gcm::new_from_slice(&key.0).map_err(|_| SealError::NoKey)?;
    let nonce_bytes = crypto::random_bytes(12).map_err(|_| SealError::Random)?;
    let nonce_arr: [u8; 12] = nonce_bytes
        .as_slice()
        .try_into()
        .map_err(|_| SealError::Random)?;
    let ct = cipher
        .encrypt(
            &Nonce::from(nonce_arr),
            Payload {
                msg: code.as_bytes(),
                aad: account.as_str().as_bytes(),
            },
        )
        .map_err(|_| SealError::Open)?;
    let mut out = nonce_bytes;
    out.extend_from_slice(&ct);
    Ok(format!(
        "v1:{}",
        base64::engine::general_purpose::STANDARD.encode(out)
    ))
}

/// Opens a sealed code of `account`.
pub fn open(key: &CodeKey, account: &AccountId, sealed: &str) -> Result<String, SealError> {
    let raw = sealed
        .strip_prefix("v1:")
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .filter(|r| r.len() > 12)
        .ok_or(SealError::Open)?;
    let cipher = Aes256Gcm::new_from_slice(&key.0).map_err(|_| SealError::NoKey)?;
    let (nonce, ct) = raw.split_at(12);
    let nonce: [u8; 12] = nonce.try_into().map_err(|_| SealError::Open)?;
    let pt = cipher
        .decrypt(
            &Nonce::from(nonce),
            Payload {
                msg: ct,
                aad: account.as_str().as_bytes(),
            },
        )
        .map_err(|_| SealError::Open)?;
    String::from_utf8(pt).map_err(|_| SealError::Open)
}

fn random_from(alphabet: &[u8], len: usize) -> Result<String, SealError> {
    // Rejection sampling keeps every character equally likely.
    let limit = 256 - (256 % alphabet.len());
    let mut out = String::with_capacity(len);
    while out.len() < len {
        let bytes = crypto::random_bytes(len * 2).map_err(|_| SealError::Random)?;
        for b in bytes {
            if usize::from(b) < limit && out.len() < len {
                out.push(char::from(alphabet[usize::from(b) % alphabet.len()]));
            }
        }
    }
    Ok(out)
}

/// A fresh learner sign-in code.
pub fn new_code(len: usize) -> Result<String, SealError> {
    random_from(CODE_ALPHABET, len.clamp(4, 32))
}

/// How a typed code compares: trimmed, lower case, spaces and dashes dropped.
fn normalise_code(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .flat_map(char::to_lowercase)
        .collect()
}

/// Neutralises a CSV cell a spreadsheet would run as a formula, then quotes it when needed.
pub fn csv_cell(value: &str) -> String {
    let v = if value.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{value}")
    } else {
        value.to_owned()
    };
    if v.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", v.replace('"', "\"\""))
    } else {
        v
    }
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/login/classroom", get(code_form).post(code_submit))
        .route("/classroom", get(home))
        .route("/classroom/{kind}/{id}", get(scope_page))
        .route("/classroom/{kind}/{id}/learner/{user}", get(learner_page))
        .route("/classroom/{kind}/{id}/reset", post(reset))
        .route("/classroom/{kind}/{id}/codes.csv", get(download))
        .route(
            "/classroom/{kind}/{id}/print",
            get(print_sheet).post(crate::badges::print_with_badges),
        )
        .merge(crate::badges::routes())
}

// ---------------------------------------------------------------- sign-in by code

#[derive(Template)]
#[template(path = "classroom_login.html")]
struct CodeLoginPage<'a> {
    app_name: &'a str,
    csrf: &'a str,
    req: &'a str,
    class_code: &'a str,
    username: &'a str,
    back_href: &'a str,
}

#[derive(Deserialize, Default)]
struct CodeQuery {
    req: Option<String>,
    class: Option<String>,
}

pub(crate) fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn code_href(req: &str) -> String {
    if req.is_empty() {
        "/login/classroom".into()
    } else {
        format!("/login/classroom?req={}", enc(req))
    }
}

/// GET `/login/classroom`: "Sign in with a class code".
async fn code_form(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<CodeQuery>,
) -> Response {
    let ctx = PageCtx::from_headers(&headers);
    let req_id: String = q.req.unwrap_or_default().chars().take(200).collect();
    let app_name = if req_id.is_empty() {
        String::new()
    } else {
        match flows(&state).get_auth_request(&req_id).await {
            Ok(Some(r)) => state
                .app(&r.client_id)
                .await
                .ok()
                .flatten()
                .map(|a| a.name.clone())
                .unwrap_or_default(),
            _ => {
                return refuse(
                    &state,
                    &RefId::generate(),
                    &Refusal::new(
                        LoginError::FlowExpired,
                        "authorization request unknown or expired",
                    ),
                    &ctx,
                    Ev::default(),
                );
            }
        }
    };
    let Some((csrf, fresh)) = csrf_token(&state, &headers) else {
        return refuse(
            &state,
            &RefId::generate(),
            &Refusal::new(LoginError::Internal, "randomness unavailable"),
            &ctx,
            Ev::default(),
        );
    };
    let class_code: String = q.class.unwrap_or_default().chars().take(32).collect();
    let resp = html(
        StatusCode::OK,
        &CodeLoginPage {
            app_name: &app_name,
            csrf: &csrf,
            req: &req_id,
            class_code: &class_code,
            username: "",
            back_href: &if req_id.is_empty() {
                String::new()
            } else {
                format!("/login?req={}", enc(&req_id))
            },
        },
    );
    with_csrf(&state, resp, &csrf, fresh)
}

/// The classroom rate limit (per minute and burst from the settings) on `key`: the
/// seconds to wait when over it.
pub(crate) async fn limited(state: &AppState, key: &str) -> Option<u64> {
    let s = &state.settings.classroom;
    let interval = 60_000 / s.attempts_per_minute.max(1);
    match state
        .sessions
        .backend()
        .gcra(key, interval, s.attempts_burst.max(1))
        .await
    {
        Ok(homeroom_session::Gcra::Allowed) => None,
        Ok(homeroom_session::Gcra::Limited { retry_after_ms }) => {
            Some(retry_after_ms.div_ceil(1000).max(1))
        }
        Err(e) => {
            tracing::warn!(error = %e, "classroom rate limiter unavailable; attempt allowed");
            None
        }
    }
}

/// POST `/login/classroom`.
async fn code_submit(
    State(state): State<AppState>,
    axum::Extension(ClientIp(ip)): axum::Extension<ClientIp>,
    request: Request,
) -> Response {
    let (parts, body) = request.into_parts();
    let headers = parts.headers;
    let mut ctx = PageCtx::from_headers(&headers);
    let form = match axum::body::to_bytes(body, 16 * 1024).await {
        Ok(b) => crate::oauth::parse_params(&b).unwrap_or_default(),
        Err(_) => HashMap::new(),
    };
    let ip = ip.to_string();
    let field = |k: &str| form.get(k).map(String::as_str).unwrap_or("");
    let (req_id, class_code, username, code) = (
        field("req"),
        field("class_code").trim().to_ascii_uppercase(),
        field("username").trim(),
        normalise_code(field("code")),
    );
    if !csrf_ok(&state, &headers, field("csrf")) {
        return refuse(
            &state,
            &RefId::generate(),
            &Refusal::new(
                LoginError::Csrf,
                "class-code sign-in POST without a valid CSRF token or from another origin",
            ),
            &ctx,
            Ev::default(),
        );
    }
    ctx = ctx.retry(code_href(req_id), "Try again");
    let req = if req_id.is_empty() {
        None
    } else {
        match flows(&state).get_auth_request(req_id).await {
            Ok(Some(r)) => Some(r),
            _ => {
                return refuse(
                    &state,
                    &RefId::generate(),
                    &Refusal::new(
                        LoginError::FlowExpired,
                        "authorization request unknown or expired",
                    ),
                    &ctx,
                    Ev::default(),
                );
            }
        }
    };
    let ref_id = req
        .as_ref()
        .map(|r| r.ref_id.clone())
        .unwrap_or_else(RefId::generate);
    if let Some(r) = &req {
        ctx = ctx.app(r.client_id.as_str());
    }
    let mut ev = Ev {
        client: req.as_ref().map(|r| r.client_id.clone()),
        tenant: req.as_ref().map(|r| r.tenant.clone()),
        ..Default::default()
    };
    for key in [
        format!("classroom:ip:{ip}"),
        format!("classroom:class:{}", crypto::sha256_hex(&class_code)),
    ] {
        if let Some(retry_after) = limited(&state, &key).await {
            return refuse(
                &state,
                &ref_id,
                &Refusal::new(
                    LoginError::TooManyAttempts { retry_after },
                    format!("class-code sign-in rate limit ({key})"),
                ),
                &ctx,
                ev.detail(serde_json::json!({ "ip": ip })),
            );
        }
    }
    let invalid = |detail: String, ev: Ev| {
        refuse(
            &state,
            &ref_id,
            &Refusal::new(LoginError::ClassroomCodeInvalid, detail),
            &ctx,
            ev.detail(serde_json::json!({ "ip": ip, "class_code": class_code })),
        )
    };
    let internal = |e: DirectoryError, ev: Ev| {
        refuse(
            &state,
            &ref_id,
            &Refusal::new(LoginError::Internal, format!("directory: {e}")),
            &ctx,
            ev,
        )
    };
    if class_code.is_empty() || class_code.len() > 32 || username.len() > 320 || code.len() > 64 {
        return invalid("class code, username or code empty or too long".into(), ev);
    }
    let class = match state.directory.class_by_code(&class_code).await {
        Ok(Some(c)) => c,
        Ok(None) => return invalid("no class has this class code".into(), ev),
        Err(e) => return internal(e, ev),
    };
    let (tenant, class_id) = class;
    if req.as_ref().is_some_and(|r| r.tenant != tenant) {
        return invalid(
            format!("the class code belongs to tenant {tenant}, not the app's tenant"),
            ev,
        );
    }
    ev.tenant = Some(tenant.clone());
    let Some(key) = state
        .settings
        .classroom
        .key
        .clone()
        .filter(|_| state.settings.classroom.enabled_for(&tenant))
    else {
        return refuse(
            &state,
            &ref_id,
            &Refusal::new(
                LoginError::ClassroomCodesDisabled,
                format!("sign-in codes are not enabled for tenant {tenant}"),
            ),
            &ctx,
            ev,
        );
    };
    let members = match state.directory.class_members(&tenant, &class_id).await {
        Ok(m) => m,
        Err(e) => return internal(e, ev),
    };
    let matching: Vec<&ClassMember> = members
        .iter()
        .filter(|m| m.role == "student" && m.username.eq_ignore_ascii_case(username))
        .collect();
    let Some(account_id) = matching
        .first()
        .filter(|_| matching.len() == 1)
        .and_then(|m| m.account.clone())
    else {
        return invalid(
            format!(
                "{} learners of class {class_id} have this username",
                matching.len()
            ),
            ev,
        );
    };
    ev.account = Some(account_id.clone());
    let account = match state.directory.get_account(&account_id).await {
        Ok(Some(a)) => a,
        Ok(None) => return invalid("the learner's account is gone".into(), ev),
        Err(e) => return internal(e, ev),
    };
    let stored = match state.directory.sign_in_code(&account_id).await {
        Ok(Some(s)) => s,
        Ok(None) => return invalid("the learner has no sign-in code yet".into(), ev),
        Err(e) => return internal(e, ev),
    };
    let policy = crate::local::policy_for(&state, &tenant).await;
    let count = match state
        .directory
        .claim_code_attempt(&account_id, state.now(), Some(&ip), &policy)
        .await
    {
        Ok(AttemptClaim::Claimed { count }) => count,
        Ok(AttemptClaim::Locked { until }) => {
            return refuse(
                &state,
                &ref_id,
                &Refusal::new(
                    LoginError::AccountLocked { until },
                    format!(
                        "sign-in code locked after {} failed attempts; this attempt was not checked",
                        policy.max_failed_attempts
                    ),
                ),
                &ctx,
                ev.detail(serde_json::json!({ "ip": ip })),
            );
        }
        Ok(AttemptClaim::NoCredential) => {
            return invalid("the learner has no sign-in code".into(), ev);
        }
        Err(e) => return internal(e, ev),
    };
    let ok = match open(&key, &account_id, &stored.code_enc) {
        Ok(expected) => crypto::ct_eq(normalise_code(&expected).as_bytes(), code.as_bytes()),
        Err(e) => {
            tracing::warn!(account = %account_id, error = %e, "stored sign-in code cannot be opened");
            false
        }
    };
    if !ok {
        if count >= policy.max_failed_attempts {
            audit::record(
                &state,
                Some(&ref_id),
                "classroom.locked",
                ev.clone().detail(serde_json::json!({
                    "failed_attempts": count,
                    "until": state.now() + policy.lockout_secs,
                    "ip": ip,
                })),
            );
        }
        return invalid(
            format!(
                "wrong sign-in code (failure {count} of {})",
                policy.max_failed_attempts
            ),
            ev,
        );
    }
    if let Err(e) = state.directory.code_succeeded(&account_id).await {
        tracing::warn!(ref_id = %ref_id, error = %e, "could not clear the code failure counter");
    }
    let refusal = match account.status {
        AccountStatus::Active => None,
        AccountStatus::Archived => Some(LoginError::AccountArchived),
        AccountStatus::Suspended => Some(LoginError::AccountSuspended),
    };
    if let Some(err) = refusal {
        return refuse(
            &state,
            &ref_id,
            &Refusal::new(err, format!("account {} is {}", account.id, account.status)),
            &ctx,
            ev,
        );
    }
    audit::record(
        &state,
        Some(&ref_id),
        "classroom.code_ok",
        ev.detail(serde_json::json!({ "ip": ip, "class": class_id })),
    );
    let label = account
        .username
        .clone()
        .unwrap_or_else(|| username.to_owned());
    let mut resp = pipeline::issue_for(
        &state,
        &headers,
        &ref_id,
        &account,
        None,
        &label,
        req.as_ref(),
        None,
        &ctx,
    )
    .await;
    if matches!(
        resp.status(),
        StatusCode::FOUND | StatusCode::TEMPORARY_REDIRECT | StatusCode::PERMANENT_REDIRECT
    ) {
        *resp.status_mut() = StatusCode::SEE_OTHER;
    }
    resp
}

// ---------------------------------------------------------------- teacher pages

/// The signed-in teacher.
pub(crate) struct Teacher {
    pub(crate) account: Account,
    /// Schools this account is lead teacher of.
    pub(crate) lead_of: Vec<String>,
    pub(crate) csrf: String,
    pub(crate) fresh_csrf: bool,
}

impl Teacher {
    pub(crate) fn actor(&self) -> String {
        format!("account:{}", self.account.id)
    }
    fn who(&self) -> Who<'_> {
        Who {
            tenant: &self.account.tenant,
            account: Some(&self.account.id),
            lead_of: &self.lead_of,
            it: false,
        }
    }
    pub(crate) fn ev(&self) -> Ev {
        Ev {
            tenant: Some(self.account.tenant.clone()),
            account: Some(self.account.id.clone()),
            ..Default::default()
        }
    }
}

pub(crate) fn not_yours(
    state: &AppState,
    headers: &HeaderMap,
    t: &Teacher,
    detail: String,
) -> Response {
    let ctx = PageCtx::from_headers(headers).retry("/classroom", "Back to my classes");
    refuse(
        state,
        &RefId::generate(),
        &Refusal::new(LoginError::ClassroomNotYourClass, detail),
        &ctx,
        t.ev(),
    )
}

pub(crate) fn internal(
    state: &AppState,
    headers: &HeaderMap,
    e: impl std::fmt::Display,
) -> Response {
    refuse(
        state,
        &RefId::generate(),
        &Refusal::new(LoginError::Internal, e.to_string()),
        &PageCtx::from_headers(headers),
        Ev::default(),
    )
}

/// The signed-in teacher, or a redirect to sign in.
pub(crate) async fn teacher(state: &AppState, headers: &HeaderMap) -> Result<Teacher, Response> {
    let session = match pipeline::current_session(state, headers).await {
        Ok(s) => s,
        Err(r) => return Err(internal(state, headers, r.detail)),
    };
    let Some((_, session)) = session else {
        return Err(respond::redirect(StatusCode::SEE_OTHER, "/login"));
    };
    let account = match state.directory.get_account(&session.account).await {
        Ok(a) => a,
        Err(e) => return Err(internal(state, headers, e)),
    };
    let Some(account) =
        account.filter(|a| a.status == AccountStatus::Active && a.tenant == session.tenant)
    else {
        return Err(respond::redirect(StatusCode::SEE_OTHER, "/login"));
    };
    let lead_of = if account.roles.contains(&Role::SchoolAdmin) {
        match state.directory.roster_user_for_account(&account.id).await {
            Ok(Some(u)) => u.org_sourced_ids,
            Ok(None) => Vec::new(),
            Err(e) => return Err(internal(state, headers, e)),
        }
    } else {
        Vec::new()
    };
    let Some((csrf, fresh_csrf)) = csrf_token(state, headers) else {
        return Err(internal(state, headers, "randomness unavailable"));
    };
    Ok(Teacher {
        account,
        lead_of,
        csrf,
        fresh_csrf,
    })
}

/// What a page acts on: one class, or (lead teacher) a whole school.
pub(crate) struct Scope {
    pub(crate) kind: &'static str,
    pub(crate) id: String,
    pub(crate) title: String,
    pub(crate) tenant: TenantId,
    /// The class, for class scopes.
    pub(crate) class: Option<ClassroomClass>,
    /// Learners in scope (student enrollments with an account).
    pub(crate) learners: Vec<ClassMember>,
}

impl Scope {
    pub(crate) fn base(&self) -> String {
        format!("/classroom/{}/{}", self.kind, enc(&self.id))
    }
    pub(crate) fn learner(&self, user: &str) -> Option<&ClassMember> {
        self.learners.iter().find(|m| m.user_sourced_id == user)
    }
    /// The accounts of the learners in scope.
    pub(crate) fn accounts(&self) -> Vec<AccountId> {
        self.learners
            .iter()
            .filter_map(|m| m.account.clone())
            .collect()
    }
}

/// Who acts on a class or school: a teacher (the classes they teach), a lead teacher (also
/// every class of their schools and the schools themselves), or IT (the whole tenant).
pub(crate) struct Who<'a> {
    pub(crate) tenant: &'a TenantId,
    pub(crate) account: Option<&'a AccountId>,
    pub(crate) lead_of: &'a [String],
    pub(crate) it: bool,
}

/// Why a scope could not be had.
#[derive(Debug)]
pub(crate) enum ScopeError {
    /// Exists (or might) but is not this caller's: `classroom.not_your_class`.
    NotYours(String),
    /// No such class or school in the tenant (said to IT only; a teacher gets `NotYours`).
    NotFound(String),
    Directory(DirectoryError),
}

/// Resolves a class or school for `who`. A class of another tenant is the same refusal as
/// a class they do not teach. The one authorization rule of the teacher pages and the
/// admin API.
pub(crate) async fn resolve_scope(
    state: &AppState,
    who: &Who<'_>,
    kind: &str,
    id: &str,
) -> Result<Scope, ScopeError> {
    let tenant = who.tenant.clone();
    let dir = &state.directory;
    let who_label = who
        .account
        .map(|a| format!("account {a}"))
        .unwrap_or_else(|| "the caller".into());
    match kind {
        "class" => {
            let class = dir
                .classroom_class(&tenant, id)
                .await
                .map_err(ScopeError::Directory)?;
            let Some(class) = class else {
                let detail = format!("no class {id} in tenant {tenant}");
                return Err(if who.it {
                    ScopeError::NotFound(detail)
                } else {
                    ScopeError::NotYours(detail)
                });
            };
            let teaches = match who.account {
                Some(a) => dir
                    .classes_of_account(a, "teacher")
                    .await
                    .map_err(ScopeError::Directory)?
                    .iter()
                    .any(|c| c.sourced_id == class.sourced_id),
                None => false,
            };
            if !who.it && !teaches && !who.lead_of.contains(&class.school_sourced_id) {
                return Err(ScopeError::NotYours(format!(
                    "{who_label} is not a teacher of class {id} nor lead teacher of school {}",
                    class.school_sourced_id
                )));
            }
            let learners = dir
                .class_members(&tenant, id)
                .await
                .map_err(ScopeError::Directory)?
                .into_iter()
                .filter(|m| m.role == "student" && m.account.is_some())
                .collect();
            Ok(Scope {
                kind: "class",
                id: id.to_owned(),
                title: class.title.clone(),
                tenant,
                class: Some(class),
                learners,
            })
        }
        "school" => {
            if who.it {
                let classes = dir
                    .classes_of_school(&tenant, id)
                    .await
                    .map_err(ScopeError::Directory)?;
                if classes.is_empty() {
                    return Err(ScopeError::NotFound(format!(
                        "no school {id} with classes in tenant {tenant}"
                    )));
                }
            } else if !who.lead_of.iter().any(|s| s == id) {
                return Err(ScopeError::NotYours(format!(
                    "{who_label} is not lead teacher of school {id}"
                )));
            }
            let title = format!("School {id}");
            let learners = dir
                .school_learners(&tenant, id)
                .await
                .map_err(ScopeError::Directory)?
                .into_iter()
                .filter(|m| m.account.is_some())
                .collect();
            Ok(Scope {
                kind: "school",
                id: id.to_owned(),
                title,
                tenant,
                class: None,
                learners,
            })
        }
        _ => Err(ScopeError::NotFound(format!("unknown scope {kind}"))),
    }
}

/// Resolves `/classroom/{kind}/{id}` for this teacher, or the refusal page.
pub(crate) async fn scope(
    state: &AppState,
    headers: &HeaderMap,
    t: &Teacher,
    kind: &str,
    id: &str,
) -> Result<Scope, Response> {
    resolve_scope(state, &t.who(), kind, id)
        .await
        .map_err(|e| match e {
            ScopeError::NotYours(d) | ScopeError::NotFound(d) => not_yours(state, headers, t, d),
            ScopeError::Directory(e) => internal(state, headers, e),
        })
}

/// The SSO providers of a tenant, by display name ("Google or Clever").
pub(crate) async fn provider_names(state: &AppState, tenant: &TenantId) -> String {
    let names: Vec<String> = state
        .directory
        .list_providers(Some(tenant))
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|p| p.enabled)
        .map(|p| p.display_name)
        .collect();
    if names.is_empty() {
        "their school sign-in".into()
    } else {
        names.join(" or ")
    }
}

/// A learner's current code in the clear, if they have one.
pub(crate) async fn current_code(
    state: &AppState,
    account: &AccountId,
) -> Result<Option<String>, Response> {
    let Some(key) = state.settings.classroom.key.as_ref() else {
        return Ok(None);
    };
    match state.directory.sign_in_code(account).await {
        Ok(Some(s)) => Ok(open(key, account, &s.code_enc).ok()),
        Ok(None) => Ok(None),
        Err(e) => {
            tracing::error!(error = %e, "sign-in code lookup failed");
            Ok(None)
        }
    }
}

/// Makes the class code when the class has none yet.
pub(crate) async fn class_code(state: &AppState, tenant: &TenantId, class: &str) -> Option<String> {
    if let Ok(Some(c)) = state.directory.class_code(tenant, class).await {
        return Some(c);
    }
    for _ in 0..5 {
        let candidate = random_from(CLASS_ALPHABET, 6).ok()?;
        match state
            .directory
            .ensure_class_code(tenant, class, &candidate, state.now())
            .await
        {
            Ok(c) => return Some(c),
            Err(DirectoryError::Conflict { .. }) => continue,
            Err(e) => {
                tracing::error!(error = %e, "class code could not be stored");
                return None;
            }
        }
    }
    None
}

struct ClassLink {
    href: String,
    title: String,
}

#[derive(Template)]
#[template(path = "classroom_home.html")]
struct HomePage<'a> {
    name: &'a str,
    classes: Vec<ClassLink>,
    schools: Vec<ClassLink>,
}

/// GET `/classroom`: my classes (and, for a lead teacher, my schools).
async fn home(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let t = match teacher(&state, &headers).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    let mut classes = match state
        .directory
        .classes_of_account(&t.account.id, "teacher")
        .await
    {
        Ok(cs) => cs,
        Err(e) => return internal(&state, &headers, e),
    };
    let mut schools = Vec::new();
    for school in &t.lead_of {
        if let Ok(cs) = state
            .directory
            .classes_of_school(&t.account.tenant, school)
            .await
        {
            if cs.is_empty() {
                continue;
            }
            for c in cs {
                if !classes.iter().any(|k| k.sourced_id == c.sourced_id) {
                    classes.push(c);
                }
            }
            schools.push(ClassLink {
                href: format!("/classroom/school/{}", enc(school)),
                title: school.clone(),
            });
        }
    }
    let name = t
        .account
        .name
        .clone()
        .unwrap_or_else(|| t.account.id.to_string());
    with_csrf(
        &state,
        html(
            StatusCode::OK,
            &HomePage {
                name: &name,
                classes: classes
                    .into_iter()
                    .map(|c| ClassLink {
                        href: format!("/classroom/class/{}", enc(&c.sourced_id)),
                        title: c.title,
                    })
                    .collect(),
                schools,
            },
        ),
        &t.csrf,
        t.fresh_csrf,
    )
}

struct LearnerRow {
    name: String,
    username: String,
    has_code: bool,
    href: String,
}

#[derive(Template)]
#[template(path = "classroom_class.html")]
struct ScopePage<'a> {
    title: &'a str,
    is_class: bool,
    enabled: bool,
    providers: &'a str,
    class_code: &'a str,
    notice: &'a str,
    base: &'a str,
    csrf: &'a str,
    learners: Vec<LearnerRow>,
}

#[derive(Deserialize, Default)]
struct DoneQuery {
    done: Option<String>,
}

fn done_notice(done: Option<&str>) -> &'static str {
    match done {
        Some("shared") => "Every learner in the class now has the same new sign-in code.",
        Some("each") => "Every learner now has a new sign-in code of their own.",
        Some("learner") => "The learner has a new sign-in code.",
        Some("badges") => "QR badges revoked: printed badges no longer sign anyone in.",
        _ => "",
    }
}

/// GET `/classroom/{kind}/{id}`: the learners of a class (or school) and the actions.
async fn scope_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((kind, id)): Path<(String, String)>,
    Query(q): Query<DoneQuery>,
) -> Response {
    let t = match teacher(&state, &headers).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    let s = match scope(&state, &headers, &t, &kind, &id).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let enabled = state.settings.classroom.enabled_for(&s.tenant);
    let providers = if enabled {
        String::new()
    } else {
        provider_names(&state, &s.tenant).await
    };
    let class_code = match (&s.class, enabled) {
        (Some(c), true) => class_code(&state, &s.tenant, &c.sourced_id)
            .await
            .unwrap_or_default(),
        _ => String::new(),
    };
    let mut learners = Vec::with_capacity(s.learners.len());
    for m in &s.learners {
        let has_code = match &m.account {
            Some(a) if enabled => matches!(state.directory.sign_in_code(a).await, Ok(Some(_))),
            _ => false,
        };
        learners.push(LearnerRow {
            name: m.name(),
            username: m.username.clone(),
            has_code,
            href: format!("{}/learner/{}", s.base(), enc(&m.user_sourced_id)),
        });
    }
    with_csrf(
        &state,
        html(
            StatusCode::OK,
            &ScopePage {
                title: &s.title,
                is_class: s.kind == "class",
                enabled,
                providers: &providers,
                class_code: &class_code,
                notice: done_notice(q.done.as_deref()),
                base: &s.base(),
                csrf: &t.csrf,
                learners,
            },
        ),
        &t.csrf,
        t.fresh_csrf,
    )
}

#[derive(Template)]
#[template(path = "classroom_learner.html")]
struct LearnerPage<'a> {
    scope_title: &'a str,
    name: &'a str,
    username: &'a str,
    enabled: bool,
    providers: &'a str,
    code: &'a str,
    notice: &'a str,
    base: &'a str,
    user: &'a str,
    csrf: &'a str,
}

/// GET `/classroom/{kind}/{id}/learner/{user}`: shows the learner's current code.
async fn learner_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((kind, id, user)): Path<(String, String, String)>,
    Query(q): Query<DoneQuery>,
) -> Response {
    let t = match teacher(&state, &headers).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    let s = match scope(&state, &headers, &t, &kind, &id).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let Some(m) = s.learner(&user) else {
        return not_yours(
            &state,
            &headers,
            &t,
            format!("learner {user} is not in {kind} {id}"),
        );
    };
    let Some(account) = m.account.clone() else {
        return not_yours(
            &state,
            &headers,
            &t,
            format!("learner {user} has no account"),
        );
    };
    let enabled = state.settings.classroom.enabled_for(&s.tenant);
    let providers = if enabled {
        String::new()
    } else {
        provider_names(&state, &s.tenant).await
    };
    let code = if enabled {
        match current_code(&state, &account).await {
            Ok(c) => c.unwrap_or_default(),
            Err(r) => return r,
        }
    } else {
        String::new()
    };
    if !code.is_empty() {
        audit::record(
            &state,
            None,
            "classroom.code_shown",
            Ev {
                account: Some(t.account.id.clone()),
                ..t.ev()
            }
            .detail(serde_json::json!({
                "by": t.actor(), "learner": account.as_str(), "scope": s.kind, "id": s.id
            })),
        );
    }
    with_csrf(
        &state,
        html(
            StatusCode::OK,
            &LearnerPage {
                scope_title: &s.title,
                name: &m.name(),
                username: &m.username,
                enabled,
                providers: &providers,
                code: &code,
                notice: done_notice(q.done.as_deref()),
                base: &s.base(),
                user: &m.user_sourced_id,
                csrf: &t.csrf,
            },
        ),
        &t.csrf,
        t.fresh_csrf,
    )
}

/// POST `/classroom/{kind}/{id}/reset`: `mode` = `learner` (with `learner`), `shared`
/// (class only) or `each`.
async fn reset(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((kind, id)): Path<(String, String)>,
    form: Result<axum::Form<HashMap<String, String>>, axum::extract::rejection::FormRejection>,
) -> Response {
    let form = form.map(|axum::Form(m)| m).unwrap_or_default();
    let field = |k: &str| form.get(k).map(String::as_str).unwrap_or("");
    let t = match teacher(&state, &headers).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    if !csrf_ok(&state, &headers, field("csrf")) {
        return refuse(
            &state,
            &RefId::generate(),
            &Refusal::new(
                LoginError::Csrf,
                "classroom reset without a valid CSRF token",
            ),
            &PageCtx::from_headers(&headers),
            t.ev(),
        );
    }
    let s = match scope(&state, &headers, &t, &kind, &id).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let mode = field("mode");
    if let Err(e) = reset_codes(&state, &s, mode, field("learner"), &t.actor(), t.ev()).await {
        return match e {
            ResetError::Disabled => refuse(
                &state,
                &RefId::generate(),
                &Refusal::new(
                    LoginError::ClassroomCodesDisabled,
                    format!("sign-in codes are not enabled for tenant {}", s.tenant),
                ),
                &PageCtx::from_headers(&headers).retry(s.base(), "Back"),
                t.ev(),
            ),
            ResetError::NotInScope(d) => not_yours(&state, &headers, &t, d),
            ResetError::BadMode(d) | ResetError::Internal(d) => internal(&state, &headers, d),
        };
    }
    let to = if mode == "learner" {
        format!(
            "{}/learner/{}?done=learner",
            s.base(),
            enc(field("learner"))
        )
    } else {
        format!("{}?done={mode}", s.base())
    };
    respond::redirect(StatusCode::SEE_OTHER, &to)
}

/// Why codes could not be reset. Nothing was changed.
#[derive(Debug)]
pub(crate) enum ResetError {
    /// Codes are not enabled for the tenant (or no key is configured).
    Disabled,
    /// The learner named is not in the scope.
    NotInScope(String),
    /// `mode` is not `learner`, `shared` (class only) or `each`.
    BadMode(String),
    Internal(String),
}

/// New sign-in codes in scope `s`: `mode` = `learner` (the learner `learner`), `shared`
/// (class only: one code for all) or `each`. All or nothing; revokes the learners' QR
/// badges; audited (`classroom.codes_reset`, and `classroom.badges_revoked` when badges
/// were live). Returns the accounts that got a new code.
pub(crate) async fn reset_codes(
    state: &AppState,
    s: &Scope,
    mode: &str,
    learner: &str,
    by: &str,
    ev: Ev,
) -> Result<Vec<AccountId>, ResetError> {
    let Some(key) = state
        .settings
        .classroom
        .key
        .clone()
        .filter(|_| state.settings.classroom.enabled_for(&s.tenant))
    else {
        return Err(ResetError::Disabled);
    };
    let targets: Vec<&ClassMember> = match mode {
        "learner" => match s.learner(learner) {
            Some(m) => vec![m],
            None => {
                return Err(ResetError::NotInScope(format!(
                    "learner {learner:?} is not in {} {}",
                    s.kind, s.id
                )));
            }
        },
        "shared" if s.kind == "class" => s.learners.iter().collect(),
        "each" => s.learners.iter().collect(),
        _ => return Err(ResetError::BadMode(format!("unknown reset mode {mode:?}"))),
    };
    let internal = |e: &dyn std::fmt::Display| ResetError::Internal(e.to_string());
    let len = state.settings.classroom.code_len;
    let shared = new_code(len).map_err(|e| internal(&e))?;
    let mut sealed = Vec::with_capacity(targets.len());
    for m in &targets {
        let Some(account) = m.account.clone() else {
            continue;
        };
        let code = if mode == "shared" {
            shared.clone()
        } else {
            new_code(len).map_err(|e| internal(&e))?
        };
        sealed.push((
            account.clone(),
            seal(&key, &account, &code).map_err(|e| internal(&e))?,
        ));
    }
    let badges_revoked = state
        .directory
        .set_sign_in_codes(&s.tenant, &sealed, by, state.now())
        .await
        .map_err(|e| internal(&e))?;
    let accounts: Vec<AccountId> = sealed.into_iter().map(|(a, _)| a).collect();
    let learners: Vec<&str> = accounts.iter().map(AccountId::as_str).collect();
    audit::record(
        state,
        None,
        "classroom.codes_reset",
        ev.clone().detail(serde_json::json!({
            "by": by, "scope": s.kind, "id": s.id, "mode": mode, "learners": learners,
        })),
    );
    if badges_revoked > 0 {
        audit::record(
            state,
            None,
            "classroom.badges_revoked",
            ev.detail(serde_json::json!({
                "by": by, "scope": s.kind, "id": s.id, "reason": "code_reset",
                "learners": learners, "revoked": badges_revoked,
            })),
        );
    }
    Ok(accounts)
}

/// Rows of a download or sheet: (name, username, code or empty), one per learner of
/// `s.learners`, in order.
pub(crate) async fn rows(
    state: &AppState,
    s: &Scope,
) -> Result<Vec<(String, String, String)>, Response> {
    let enabled = state.settings.classroom.enabled_for(&s.tenant);
    let mut out = Vec::with_capacity(s.learners.len());
    for m in &s.learners {
        let code = match (&m.account, enabled) {
            (Some(a), true) => current_code(state, a).await?.unwrap_or_default(),
            _ => String::new(),
        };
        out.push((m.name(), m.username.clone(), code));
    }
    Ok(out)
}

/// GET `/classroom/{kind}/{id}/codes.csv`: username, name, sign-in code, parent access code.
async fn download(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((kind, id)): Path<(String, String)>,
) -> Response {
    let t = match teacher(&state, &headers).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    let s = match scope(&state, &headers, &t, &kind, &id).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let rows = match rows(&state, &s).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    audit::record(
        &state,
        None,
        "classroom.codes_downloaded",
        t.ev().detail(serde_json::json!({
            "by": t.actor(), "scope": s.kind, "id": s.id, "learners": rows.len()
        })),
    );
    let parents = parent_codes(&state, &s, &t.actor()).await;
    csv_response(&s, codes_csv(&rows, &parents))
}

/// The parent access code of each learner of `s.learners`, in order (empty where the
/// learner has no account or no code can be made); issued by `by` where none is current.
pub(crate) async fn parent_codes(state: &AppState, s: &Scope, by: &str) -> Vec<String> {
    let mut out = Vec::with_capacity(s.learners.len());
    for m in &s.learners {
        out.push(match &m.account {
            Some(a) => crate::family::parent_code_for_csv(state, a, by).await,
            None => String::new(),
        });
    }
    out
}

/// The CSV of a download: username, name, sign-in code, parent access code; every cell
/// neutralised ([`csv_cell`]).
pub(crate) fn codes_csv(rows: &[(String, String, String)], parents: &[String]) -> String {
    let mut csv = String::from("username,name,sign_in_code,parent_access_code\r\n");
    for ((name, username, code), parent) in rows.iter().zip(parents) {
        csv.push_str(&format!(
            "{},{},{},{}\r\n",
            csv_cell(username),
            csv_cell(name),
            csv_cell(code),
            csv_cell(parent)
        ));
    }
    csv
}

/// `csv` as a no-store attachment named after the scope.
pub(crate) fn csv_response(s: &Scope, csv: String) -> Response {
    let safe: String =
        s.id.chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .take(64)
            .collect();
    let mut r = csv.into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(v) = HeaderValue::from_str(&format!(
        "attachment; filename=\"{}-{safe}-codes.csv\"",
        s.kind
    )) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    r
}

struct Card {
    name: String,
    username: String,
    code: String,
    /// The learner's QR badge (inline SVG made by [`crate::badges::qr_svg`]), or empty.
    badge: String,
}

/// An app a badge may continue to.
pub(crate) struct AppChoice {
    pub(crate) id: String,
    pub(crate) name: String,
}

#[derive(Template)]
#[template(path = "classroom_print.html")]
struct PrintPage<'a> {
    title: &'a str,
    class_code: &'a str,
    enabled: bool,
    providers: &'a str,
    sign_in_url: &'a str,
    cards: Vec<Card>,
    /// The cards carry QR badges.
    badges: bool,
    base: &'a str,
    csrf: &'a str,
    apps: Vec<AppChoice>,
}

/// GET `/classroom/{kind}/{id}/print`: one card per learner.
async fn print_sheet(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((kind, id)): Path<(String, String)>,
) -> Response {
    let t = match teacher(&state, &headers).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    let s = match scope(&state, &headers, &t, &kind, &id).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    sheet(&state, &headers, &t, &s, None).await
}

/// The printable sheet of scope `s`; with `badges` (learner account -> QR SVG), each card
/// carries its learner's badge. Audited (`classroom.sheet_printed`).
pub(crate) async fn sheet(
    state: &AppState,
    headers: &HeaderMap,
    t: &Teacher,
    s: &Scope,
    badges: Option<&HashMap<AccountId, String>>,
) -> Response {
    let enabled = state.settings.classroom.enabled_for(&s.tenant);
    let providers = if enabled {
        String::new()
    } else {
        provider_names(state, &s.tenant).await
    };
    let class_code = match (&s.class, enabled) {
        (Some(c), true) => class_code(state, &s.tenant, &c.sourced_id)
            .await
            .unwrap_or_default(),
        _ => String::new(),
    };
    let rows = match rows(state, s).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    let apps = match state.directory.list_apps(Some(&s.tenant)).await {
        Ok(list) => list
            .into_iter()
            .filter(|a| a.enabled)
            .map(|a| AppChoice {
                id: a.client_id.to_string(),
                name: a.name,
            })
            .collect(),
        Err(e) => return internal(state, headers, e),
    };
    audit::record(
        state,
        None,
        "classroom.sheet_printed",
        t.ev().detail(serde_json::json!({
            "by": t.actor(), "scope": s.kind, "id": s.id, "learners": rows.len(),
            "badges": badges.is_some(),
        })),
    );
    // `rows` has one row per learner of `s.learners`, in order.
    let cards = s
        .learners
        .iter()
        .zip(rows)
        .map(|(m, (name, username, code))| Card {
            name,
            username,
            code,
            badge: match (badges, &m.account) {
                (Some(b), Some(a)) => b.get(a).cloned().unwrap_or_default(),
                _ => String::new(),
            },
        })
        .collect();
    with_csrf(
        state,
        html(
            StatusCode::OK,
            &PrintPage {
                title: &s.title,
                class_code: &class_code,
                enabled,
                providers: &providers,
                sign_in_url: &state.settings.url("/login/classroom"),
                cards,
                badges: badges.is_some(),
                base: &s.base(),
                csrf: &t.csrf,
                apps,
            },
        ),
        &t.csrf,
        t.fresh_csrf,
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn seal_round_trips_and_binds_the_account() {
        let key = CodeKey::new([7; 32]);
        let a = AccountId::new("acc_1");
        let s1 = seal(&key, &a, "abc234").unwrap();
        let s2 = seal(&key, &a, "abc234").unwrap();
        assert_ne!(s1, s2, "fresh nonce per code");
        assert!(!s1.contains("abc234"));
        assert_eq!(open(&key, &a, &s1).unwrap(), "abc234");
        assert!(open(&key, &AccountId::new("acc_2"), &s1).is_err());
        assert!(open(&CodeKey::new([8; 32]), &a, &s1).is_err());
    }

    #[test]
    fn codes_use_the_alphabet() {
        let c = new_code(6).unwrap();
        assert_eq!(c.len(), 6);
        assert!(c.bytes().all(|b| CODE_ALPHABET.contains(&b)));
        assert_eq!(normalise_code(" AB-c 2 "), "abc2");
    }

    #[test]
    fn keys_parse_from_hex_and_base64() {
        let hex = "00".repeat(32);
        assert!(CodeKey::parse(&hex).is_some());
        let b64 = base64::engine::general_purpose::STANDARD.encode([1u8; 32]);
        assert!(CodeKey::parse(&b64).is_some());
        assert!(CodeKey::parse("short").is_none());
        assert_eq!(format!("{:?}", CodeKey::new([1; 32])), "CodeKey(***)");
    }

    #[test]
    fn formula_cells_are_neutralised() {
        assert_eq!(csv_cell("=1+2"), "'=1+2");
        assert_eq!(csv_cell("+x"), "'+x");
        assert_eq!(csv_cell("-x"), "'-x");
        assert_eq!(csv_cell("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(csv_cell("\tx"), "'\tx");
        assert_eq!(csv_cell("a,b"), "\"a,b\"");
        assert_eq!(csv_cell("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(csv_cell("maya"), "maya");
    }
}
