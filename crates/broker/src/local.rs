//! Local (Homeroom password) accounts: the password sign-in form, lockout, invitations,
//! "Trouble signing in?" resets, and `/session/status` with the session-warning script
//! apps embed.
//!
//! What it owns:
//! - [`HashPool`]: argon2id runs on the blocking pool behind a semaphore sized from
//!   [`LocalSettings::hash_workers`], with a bounded wait queue; over the bound a request
//!   gets the "busy, try again" page at once (503 + `Retry-After`), never a timeout.
//! - The password sign-in (`/login/password`): CSRF double-submit, one lockout slot
//!   claimed atomically in the directory *before* the password is checked (so concurrent
//!   attempts on several instances are counted exactly), the same answer for a wrong
//!   password and an unknown login (a dummy hash keeps the timing comparable), then the
//!   pipeline's own Issue step ([`crate::pipeline::issue_for`]).
//! - Invitation and reset links: ≥ 256-bit tokens, stored as SHA-256 only, links built
//!   from the configured issuer (never the `Host` header), single use enforced by the
//!   directory.
//! - The functions the admin API calls: [`unlock`], [`invite`], [`issue_reset`],
//!   [`status`], [`pending_invitations`], [`pending_resets`], [`email_log`],
//!   [`create_local_account`].
//!
//! It never renders provider buttons (the login page links here) and never sends mail
//! itself (it writes the outbox; [`crate::mail`] delivers).

use crate::AppState;
use crate::audit::{self, Ev};
use crate::cookies::{self, CookieValue};
use crate::flows::{AuthRequest, flows};
use crate::mail;
use crate::middleware::ClientIp;
use crate::pages::html;
use crate::pipeline::{self, Refusal, refuse};
use crate::respond::{self, PageCtx};
use askama::Template;
use axum::Router;
use axum::extract::{Path, Query, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use homeroom_core::crypto::{self, sha256_hex};
use homeroom_core::{AccountId, LoginError, RefId, Role, TenantId};
use homeroom_directory::{
    Account, AccountStatus, AttemptClaim, DirectoryError, Invitation, LinkUse, LocalPolicy,
    OutboxMail, PasswordReset, Tenant,
};
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Settings of local accounts (defaults from [`LocalSettings::default`]).
#[derive(Debug, Clone)]
pub struct LocalSettings {
    /// Password hashes computed at once (blocking threads used by argon2).
    pub hash_workers: usize,
    /// Requests allowed to wait for a hashing worker; one more gets the busy page.
    pub hash_queue: usize,
    /// argon2id memory (KiB), iterations and lanes for new hashes (OWASP: 19 MiB, 2, 1).
    pub argon2_m_kib: u32,
    pub argon2_t: u32,
    pub argon2_p: u32,
    /// Lockout policy of tenants that have none stored (10 failures, 1 hour).
    pub policy: LocalPolicy,
    /// Lifetime of a reset link (6 hours).
    pub reset_ttl_secs: i64,
    /// Shortest new password, in characters.
    pub min_password_chars: usize,
    /// Longest password accepted, in bytes; longer ones are refused before hashing.
    pub max_password_bytes: usize,
    /// `Retry-After` of the busy page, seconds.
    pub busy_retry_after: u64,
    /// How often the mail task looks for due mail, milliseconds.
    pub mail_poll_ms: u64,
    /// Delivery attempts before a mail is given up.
    pub mail_max_attempts: i64,
}

impl Default for LocalSettings {
    fn default() -> Self {
        let cpus = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        Self {
            hash_workers: cpus.clamp(1, 8),
            hash_queue: 64,
            argon2_m_kib: 19 * 1024,
            argon2_t: 2,
            argon2_p: 1,
            policy: LocalPolicy::default(),
            reset_ttl_secs: 6 * 3600,
            min_password_chars: 8,
            max_password_bytes: 1024,
            busy_retry_after: 5,
            mail_poll_ms: 1000,
            mail_max_attempts: 8,
        }
    }
}

// ---------------------------------------------------------------------------------------
// The hashing pool
// ---------------------------------------------------------------------------------------

/// Why a hash could not be computed or checked.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    /// Every worker is busy and the wait queue is full.
    #[error("password hashing pool is full")]
    Busy,
    /// argon2 refused (bad parameters, unparsable stored hash) or the task died.
    #[error("password hashing failed: {0}")]
    Failed(String),
}

/// The bounded argon2 pool. `permits` holds one permit per worker: a permit is moved into
/// the blocking task and released when the hash is done. `waiting` counts requests queued
/// for a permit; the queue never grows past `queue`.
pub struct HashPool {
    permits: Arc<Semaphore>,
    waiting: AtomicUsize,
    queue: usize,
    params: argon2::Params,
    /// A hash of a random password with the current parameters, checked for unknown
    /// logins so they cost what a real check costs. Made on first use.
    dummy: Arc<OnceLock<String>>,
}

impl std::fmt::Debug for HashPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HashPool")
            .field("available", &self.permits.available_permits())
            .field("waiting", &self.waiting.load(Ordering::SeqCst))
            .field("queue", &self.queue)
            .finish()
    }
}

/// Decrements the wait counter however the wait ends (permit, busy, or the request
/// being dropped).
struct WaitSlot<'a>(&'a AtomicUsize);

impl Drop for WaitSlot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A worker reserved for one hash or check.
pub struct Admitted {
    permit: OwnedSemaphorePermit,
    params: argon2::Params,
    dummy: Arc<OnceLock<String>>,
}

fn argon(params: argon2::Params) -> argon2::Argon2<'static> {
    argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
}

fn hash_now(params: &argon2::Params, password: &str) -> Result<String, HashError> {
    use argon2::PasswordHasher;
    let salt_bytes = crypto::random_bytes(16).map_err(|e| HashError::Failed(e.to_string()))?;
    let salt = argon2::password_hash::SaltString::encode_b64(&salt_bytes)
        .map_err(|e| HashError::Failed(e.to_string()))?;
    argon(params.clone())
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| HashError::Failed(e.to_string()))
}

fn verify_now(password: &str, phc: &str) -> Result<bool, HashError> {
    use argon2::PasswordVerifier;
    let parsed = argon2::PasswordHash::new(phc).map_err(|e| HashError::Failed(e.to_string()))?;
    // The stored hash carries its own parameters; `Argon2::default()` only supplies the
    // algorithm family for parsing.
    match argon2::Argon2::default().verify_password(password.as_bytes(), &parsed) {
        Ok(()) => Ok(true),
        Err(argon2::password_hash::Error::Password) => Ok(false),
        Err(e) => Err(HashError::Failed(e.to_string())),
    }
}

impl HashPool {
    pub fn new(s: &LocalSettings) -> Self {
        let params = argon2::Params::new(
            s.argon2_m_kib.max(argon2::Params::MIN_M_COST),
            s.argon2_t.max(1),
            s.argon2_p.max(1),
            None,
        )
        .unwrap_or_default();
        Self {
            permits: Arc::new(Semaphore::new(s.hash_workers.max(1))),
            waiting: AtomicUsize::new(0),
            queue: s.hash_queue,
            params,
            dummy: Arc::default(),
        }
    }

    /// Reserves a worker: at once when one is free, else after waiting in the bounded
    /// queue; [`HashError::Busy`] at once when the queue is full.
    pub async fn admit(&self) -> Result<Admitted, HashError> {
        let permit = match self.permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                let before = self.waiting.fetch_add(1, Ordering::SeqCst);
                let _slot = WaitSlot(&self.waiting);
                if before >= self.queue {
                    return Err(HashError::Busy);
                }
                self.permits
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(|_| HashError::Busy)?
            }
        };
        Ok(Admitted {
            permit,
            params: self.params.clone(),
            dummy: self.dummy.clone(),
        })
    }

    /// Requests waiting for a worker now (for metrics and tests).
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }
}

impl Admitted {
    /// Hashes a new password (argon2id PHC string).
    pub async fn hash(self, password: String) -> Result<String, HashError> {
        let Admitted { permit, params, .. } = self;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            hash_now(&params, &password)
        })
        .await
        .map_err(|e| HashError::Failed(e.to_string()))?
    }

    /// Checks a password against a stored hash, or, with `None`, against the dummy hash
    /// (always `false`, same cost).
    pub async fn verify(self, password: String, phc: Option<String>) -> Result<bool, HashError> {
        let Admitted {
            permit,
            params,
            dummy,
        } = self;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            match phc {
                Some(phc) => verify_now(&password, &phc),
                None => {
                    let d = match dummy.get() {
                        Some(d) => d.clone(),
                        None => {
                            let fresh = crypto::random_token(24)
                                .map_err(|e| HashError::Failed(e.to_string()))?;
                            let h = hash_now(&params, &fresh)?;
                            dummy.get_or_init(|| h).clone()
                        }
                    };
                    verify_now(&password, &d).map(|_| false)
                }
            }
        })
        .await
        .map_err(|e| HashError::Failed(e.to_string()))?
    }
}

// ---------------------------------------------------------------------------------------
// The API the admin console calls
// ---------------------------------------------------------------------------------------

/// Why an IT action on a local account was not done.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("no such account")]
    NoAccount,
    #[error(
        "the account signs in through {0} and never has a Homeroom password; its password lives with that provider"
    )]
    SsoOnly(String),
    #[error("the account already has a password; issue a reset link instead")]
    PasswordAlreadySet,
    #[error("the account has no Homeroom password (invite it first)")]
    NotLocal,
    #[error("the account has no email address and no username to sign in with")]
    NoLogin,
    #[error("randomness unavailable")]
    Random,
    #[error(transparent)]
    Directory(#[from] DirectoryError),
}

/// A fresh link for IT to copy (and, when the account has an email, mailed too).
#[derive(Debug, Clone, Serialize)]
pub struct IssuedLink {
    pub url: String,
    pub created_at: i64,
    /// `None` for invitations (they never expire).
    pub expires_at: Option<i64>,
    /// The outbox id of the mail announcing it, when one was written.
    pub mail_id: Option<String>,
}

/// A pending reset as IT sees it.
#[derive(Debug, Clone, Serialize)]
pub struct PendingReset {
    pub account: AccountId,
    pub sent_at: i64,
    pub expires_at: i64,
    pub requested_by: String,
}

/// A pending invitation as IT sees it.
#[derive(Debug, Clone, Serialize)]
pub struct PendingInvitation {
    pub account: AccountId,
    pub created_at: i64,
    pub created_by: String,
}

/// What IT sees about an account's Homeroom password.
#[derive(Debug, Clone, Serialize)]
pub struct LocalStatus {
    pub password_set: bool,
    pub password_set_at: Option<i64>,
    pub failed_attempts: i64,
    pub last_failed_at: Option<i64>,
    pub last_failed_ip: Option<String>,
    pub locked_until: Option<i64>,
    pub pending_invitation: Option<PendingInvitation>,
    pub pending_reset: Option<PendingReset>,
    pub policy: LocalPolicy,
}

/// The lockout policy in force for a tenant.
pub async fn policy_for(state: &AppState, tenant: &TenantId) -> LocalPolicy {
    match state.directory.local_policy(tenant).await {
        Ok(Some(p)) => p,
        Ok(None) => state.settings.local.policy,
        Err(e) => {
            tracing::warn!(error = %e, "lockout policy unreadable; using defaults");
            state.settings.local.policy
        }
    }
}

/// IT unlocks an account (clears the lock and the failure counter), audited as
/// `local.unlocked` with who did it. `Ok(false)` when the account has no Homeroom password.
pub async fn unlock(state: &AppState, account: &AccountId, by: &str) -> Result<bool, LocalError> {
    let a = state
        .directory
        .get_account(account)
        .await?
        .ok_or(LocalError::NoAccount)?;
    let before = state.directory.local_credential(account).await?;
    let done = state.directory.unlock_local(account).await?;
    if done {
        audit::record(
            state,
            None,
            "local.unlocked",
            Ev {
                tenant: Some(a.tenant.clone()),
                account: Some(account.clone()),
                ..Default::default()
            }
            .detail(serde_json::json!({
                "by": by,
                "failed_attempts_before": before.as_ref().map(|c| c.failed_attempts),
                "last_failed_ip": before.as_ref().and_then(|c| c.last_failed_ip.clone()),
            })),
        );
    }
    Ok(done)
}

/// What IT sees about an account's password (`None`: an account without one).
pub async fn status(
    state: &AppState,
    account: &AccountId,
) -> Result<Option<LocalStatus>, LocalError> {
    let Some(c) = state.directory.local_credential(account).await? else {
        return Ok(None);
    };
    let policy = policy_for(state, &c.tenant).await;
    let now = state.now();
    let pending_invitation = if c.password_set() {
        None
    } else {
        state
            .directory
            .invitations_for_account(account)
            .await?
            .into_iter()
            .find(|i| i.used_at.is_none())
            .map(|i| PendingInvitation {
                account: i.account,
                created_at: i.created_at,
                created_by: i.created_by,
            })
    };
    let pending_reset = state
        .directory
        .resets_for_account(account)
        .await?
        .into_iter()
        .find(|r| r.usable(now))
        .map(pending_reset);
    Ok(Some(LocalStatus {
        password_set: c.password_set(),
        password_set_at: c.password_set_at,
        failed_attempts: c.failed_attempts,
        last_failed_at: c.last_failed_at,
        locked_until: c.locked_until(&policy, now),
        last_failed_ip: c.last_failed_ip,
        pending_invitation,
        pending_reset,
        policy,
    }))
}

fn pending_reset(r: PasswordReset) -> PendingReset {
    PendingReset {
        account: r.account,
        sent_at: r.created_at,
        expires_at: r.expires_at,
        requested_by: r.requested_by,
    }
}

/// Pending invitations of a tenant (IT can copy a fresh link with [`invite`]).
pub async fn pending_invitations(
    state: &AppState,
    tenant: &TenantId,
) -> Result<Vec<PendingInvitation>, LocalError> {
    Ok(state
        .directory
        .pending_invitations(tenant)
        .await?
        .into_iter()
        .map(|i: Invitation| PendingInvitation {
            account: i.account,
            created_at: i.created_at,
            created_by: i.created_by,
        })
        .collect())
}

/// Usable reset links of a tenant: when each was sent and when it expires.
pub async fn pending_resets(
    state: &AppState,
    tenant: &TenantId,
) -> Result<Vec<PendingReset>, LocalError> {
    Ok(state
        .directory
        .pending_resets(tenant, state.now())
        .await?
        .into_iter()
        .map(pending_reset)
        .collect())
}

/// The email log of an account (what was sent, when, to whom, delivery status), newest
/// first. Links are never included.
pub async fn email_log(
    state: &AppState,
    account: &AccountId,
) -> Result<Vec<OutboxMail>, LocalError> {
    Ok(state.directory.mail_for_account(account, 200).await?)
}

/// Creates a local account (no password yet) and its invitation, mailed to `email` when
/// given. Returns the account and the invitation link for IT to copy.
pub async fn create_local_account(
    state: &AppState,
    tenant: &TenantId,
    email: Option<&str>,
    username: Option<&str>,
    name: Option<&str>,
    roles: Vec<Role>,
    by: &str,
) -> Result<(Account, IssuedLink), LocalError> {
    let email = email
        .map(homeroom_directory::normalise_email)
        .filter(|e| !e.is_empty());
    let username = username.map(str::trim).filter(|u| !u.is_empty());
    if email.is_none() && username.is_none() {
        return Err(LocalError::NoLogin);
    }
    let a = Account {
        id: AccountId::generate(),
        tenant: tenant.clone(),
        status: AccountStatus::Active,
        email,
        email_verified: false,
        name: name.map(str::to_owned),
        given_name: None,
        family_name: None,
        username: username.map(str::to_owned),
        roles,
        created_at: state.now(),
        last_sign_in_at: None,
        sign_in_count: 0,
    };
    state.directory.create_account(&a, None).await?;
    audit::record(
        state,
        None,
        "local.account_created",
        Ev {
            tenant: Some(tenant.clone()),
            account: Some(a.id.clone()),
            ..Default::default()
        }
        .detail(serde_json::json!({ "by": by })),
    );
    let link = invite(state, &a.id, by).await?;
    Ok((a, link))
}

/// Issues an invitation link for an account without a password (it never expires; the
/// first use sets the password; later uses go to the sign-in page). Mails it when the
/// account has an email. Calling it again gives IT a fresh link to copy; earlier links
/// keep working until one is used.
pub async fn invite(
    state: &AppState,
    account: &AccountId,
    by: &str,
) -> Result<IssuedLink, LocalError> {
    let a = state
        .directory
        .get_account(account)
        .await?
        .ok_or(LocalError::NoAccount)?;
    let cred = state.directory.local_credential(account).await?;
    if cred.as_ref().is_some_and(|c| c.password_set()) {
        return Err(LocalError::PasswordAlreadySet);
    }
    if cred.is_none() {
        let links = state.directory.links_for_account(account).await?;
        if !links.is_empty() {
            return Err(LocalError::SsoOnly(provider_names(state, &links)));
        }
    }
    let token = crypto::random_token(32).map_err(|_| LocalError::Random)?;
    let url = state.settings.url(&format!("/login/invite/{token}"));
    let now = state.now();
    let tenant_name = tenant_name(state, &a.tenant).await;
    let m = mail::invitation(state, &a, &tenant_name, &url);
    let inv = Invitation {
        token_hash: sha256_hex(&token),
        account: a.id.clone(),
        tenant: a.tenant.clone(),
        created_at: now,
        created_by: by.to_owned(),
        used_at: None,
    };
    state.directory.create_invitation(&inv, m.as_ref()).await?;
    audit::record(
        state,
        None,
        "local.invited",
        Ev {
            tenant: Some(a.tenant.clone()),
            account: Some(a.id.clone()),
            ..Default::default()
        }
        .detail(serde_json::json!({ "by": by, "mailed": m.is_some() })),
    );
    Ok(IssuedLink {
        url,
        created_at: now,
        expires_at: None,
        mail_id: m.map(|m| m.id),
    })
}

/// Issues a fresh reset link (valid `reset_ttl_secs`, single use; older links of the
/// account stop working), mailed when the account has an email. `by` is `self` for the
/// "Trouble signing in?" form, else the IT user.
pub async fn issue_reset(
    state: &AppState,
    account: &AccountId,
    by: &str,
) -> Result<IssuedLink, LocalError> {
    let a = state
        .directory
        .get_account(account)
        .await?
        .ok_or(LocalError::NoAccount)?;
    if state.directory.local_credential(account).await?.is_none() {
        let links = state.directory.links_for_account(account).await?;
        return Err(if links.is_empty() {
            LocalError::NotLocal
        } else {
            LocalError::SsoOnly(provider_names(state, &links))
        });
    }
    let token = crypto::random_token(32).map_err(|_| LocalError::Random)?;
    let url = state.settings.url(&format!("/login/reset/{token}"));
    let now = state.now();
    let expires_at = now + state.settings.local.reset_ttl_secs;
    let tenant_name = tenant_name(state, &a.tenant).await;
    let m = mail::reset(state, &a, &tenant_name, &url, expires_at);
    let r = PasswordReset {
        token_hash: sha256_hex(&token),
        account: a.id.clone(),
        tenant: a.tenant.clone(),
        created_at: now,
        expires_at,
        requested_by: by.to_owned(),
        used_at: None,
        revoked_at: None,
    };
    state.directory.create_reset(&r, m.as_ref()).await?;
    audit::record(
        state,
        None,
        "local.reset_issued",
        Ev {
            tenant: Some(a.tenant.clone()),
            account: Some(a.id.clone()),
            ..Default::default()
        }
        .detail(serde_json::json!({ "by": by, "expires_at": expires_at, "mailed": m.is_some() })),
    );
    Ok(IssuedLink {
        url,
        created_at: now,
        expires_at: Some(expires_at),
        mail_id: m.map(|m| m.id),
    })
}

fn provider_names(state: &AppState, links: &[homeroom_directory::ProviderLink]) -> String {
    let mut names: Vec<String> = Vec::new();
    for l in links {
        let n = state
            .providers
            .get(&l.provider)
            .map(|r| r.record.display_name.clone())
            .unwrap_or_else(|| l.provider.to_string());
        if !names.contains(&n) {
            names.push(n);
        }
    }
    names.join(" or ")
}

async fn tenant_name(state: &AppState, t: &TenantId) -> String {
    state
        .directory
        .get_tenant(t)
        .await
        .ok()
        .flatten()
        .map(|t| t.name)
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------
// Pages and handlers
// ---------------------------------------------------------------------------------------

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/login/password", get(password_form).post(password_submit))
        .route("/login/trouble", get(trouble_form).post(trouble_submit))
        .route("/login/reset/{token}", get(reset_form))
        .route("/login/reset", axum::routing::post(reset_submit))
        .route("/login/invite/{token}", get(invite_form))
        .route("/login/invite", axum::routing::post(invite_submit))
        .route(
            "/session/status",
            get(session_status)
                .post(session_status)
                .options(session_status),
        )
        .route("/static/session-warning.js", get(warning_script))
}

#[derive(Template)]
#[template(path = "local_login.html")]
struct LocalLoginPage<'a> {
    tenant_name: &'a str,
    app_name: &'a str,
    notice: &'a str,
    csrf: &'a str,
    req: &'a str,
    tenant: &'a str,
    login: &'a str,
    trouble_href: &'a str,
    back_href: &'a str,
}

#[derive(Template)]
#[template(path = "local_set_password.html")]
struct SetPasswordPage<'a> {
    heading: &'a str,
    who: &'a str,
    notice: &'a str,
    action: &'a str,
    csrf: &'a str,
    token: &'a str,
    min_len: usize,
}

#[derive(Template)]
#[template(path = "local_trouble.html")]
struct TroublePage<'a> {
    sent: &'a str,
    providers: &'a str,
    csrf: &'a str,
    req: &'a str,
    tenant: &'a str,
    back_href: &'a str,
}

#[derive(Deserialize, Default)]
struct FormQuery {
    req: Option<String>,
    tenant: Option<String>,
    done: Option<String>,
    login: Option<String>,
}

fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// `/login/password` (or another local page) for this request or tenant.
fn page_href(path: &str, req: &str, tenant: &str) -> String {
    if !req.is_empty() {
        format!("{path}?req={}", enc(req))
    } else if !tenant.is_empty() {
        format!("{path}?tenant={}", enc(tenant))
    } else {
        path.to_owned()
    }
}

/// The CSRF double-submit token: the browser's existing one (so several open tabs keep
/// working), else a fresh one to set.
pub(crate) fn csrf_token(state: &AppState, headers: &HeaderMap) -> Option<(String, bool)> {
    match cookies::read(headers, cookies::CSRF, state.settings.secure_cookies) {
        CookieValue::One(v) if (32..=128).contains(&v.len()) => Some((v, false)),
        _ => crypto::random_token(32).ok().map(|t| (t, true)),
    }
}

pub(crate) fn with_csrf(
    state: &AppState,
    mut resp: Response,
    token: &str,
    fresh: bool,
) -> Response {
    if fresh
        && let Ok(v) = HeaderValue::from_str(&cookies::set(
            cookies::CSRF,
            token,
            state.settings.secure_cookies,
            Some(3600),
        ))
    {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    resp
}

/// The issuer's origin (`scheme://host[:port]`).
fn issuer_origin(state: &AppState) -> String {
    url::Url::parse(&state.settings.issuer)
        .map(|u| u.origin().ascii_serialization())
        .unwrap_or_else(|_| state.settings.issuer.clone())
}

/// A form POST passes when its `csrf` field equals the CSRF cookie (constant time) and its
/// `Origin`, when sent, is exactly ours. Browsers send `Origin: null` for a same-origin
/// form POST from a page whose referrer policy is `no-referrer` (ours are): that passes
/// only when the browser also says `Sec-Fetch-Site: same-origin`.
pub(crate) fn csrf_ok(state: &AppState, headers: &HeaderMap, form_token: &str) -> bool {
    // One origin rule for every form (oauth::same_origin): absent, ours, or `null` with
    // Sec-Fetch-Site: same-origin (what browsers send from our no-referrer pages).
    let origin_ok = crate::oauth::same_origin(state, headers);
    let cookie_ok = match cookies::read(headers, cookies::CSRF, state.settings.secure_cookies) {
        CookieValue::One(c) => {
            !form_token.is_empty() && crypto::ct_eq(c.as_bytes(), form_token.as_bytes())
        }
        _ => false,
    };
    origin_ok && cookie_ok
}

/// Reads a form body (at most 16 KiB; repeated fields refused).
pub(crate) async fn read_form(
    req: Request,
) -> (HeaderMap, Result<HashMap<String, String>, String>) {
    let (parts, body) = req.into_parts();
    let form = match axum::body::to_bytes(body, 16 * 1024).await {
        Ok(b) => crate::oauth::parse_params(&b),
        Err(_) => Err("the form is too large".into()),
    };
    (parts.headers, form)
}

/// The sign-in context of a local page: the pending authorization request, if any, and
/// the tenant (from the request, else the `tenant` field, else the login's email domain).
struct Context {
    req: Option<AuthRequest>,
    tenant: Option<Tenant>,
}

async fn context(
    state: &AppState,
    req: &str,
    tenant: &str,
    login: &str,
) -> Result<Context, Refusal> {
    let req = if req.is_empty() {
        None
    } else {
        match flows(state).get_auth_request(req).await {
            Ok(Some(r)) => Some(r),
            Ok(None) => {
                return Err(Refusal::new(
                    LoginError::FlowExpired,
                    "authorization request unknown or expired",
                ));
            }
            Err(e) => {
                return Err(Refusal::new(
                    LoginError::Internal,
                    format!("session store: {e}"),
                ));
            }
        }
    };
    let dir_err = |e: DirectoryError| Refusal::new(LoginError::Internal, format!("directory: {e}"));
    let tenant = if let Some(r) = &req {
        state
            .directory
            .get_tenant(&r.tenant)
            .await
            .map_err(dir_err)?
    } else if !tenant.is_empty() {
        state
            .directory
            .get_tenant(&TenantId::new(tenant))
            .await
            .map_err(dir_err)?
    } else if let Some((_, domain)) = login.trim().rsplit_once('@') {
        state
            .directory
            .tenant_by_domain(&domain.to_ascii_lowercase())
            .await
            .map_err(dir_err)?
    } else {
        None
    };
    Ok(Context { req, tenant })
}

async fn app_name(state: &AppState, req: Option<&AuthRequest>) -> String {
    match req {
        Some(r) => state
            .directory
            .get_app(&r.client_id)
            .await
            .ok()
            .flatten()
            .map(|a| a.name)
            .unwrap_or_default(),
        None => String::new(),
    }
}

fn done_notice(done: Option<&str>) -> &'static str {
    match done {
        Some("reset") => "Your password is changed. Sign in with it now.",
        Some("invited") => "Your password is set. Sign in with it now.",
        Some("used") => "This invitation was already used. Sign in with your password.",
        _ => "",
    }
}

/// GET `/login/password`: the "Sign in with your Homeroom password" form.
async fn password_form(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<FormQuery>,
) -> Response {
    let ctx = PageCtx::from_headers(&headers);
    let req_id = q.req.clone().unwrap_or_default();
    let tenant_param = q.tenant.clone().unwrap_or_default();
    let c = match context(&state, &req_id, &tenant_param, "").await {
        Ok(c) => c,
        Err(r) => return refuse(&state, &RefId::generate(), &r, &ctx, Ev::default()),
    };
    let tenant_id = c
        .tenant
        .as_ref()
        .map(|t| t.id.to_string())
        .unwrap_or_default();
    let tenant_name = c
        .tenant
        .as_ref()
        .map(|t| t.name.clone())
        .unwrap_or_default();
    let app = app_name(&state, c.req.as_ref()).await;
    let Some((csrf, fresh)) = csrf_token(&state, &headers) else {
        return refuse(
            &state,
            &RefId::generate(),
            &Refusal::new(LoginError::Internal, "randomness unavailable"),
            &ctx,
            Ev::default(),
        );
    };
    let login: String = q.login.unwrap_or_default().chars().take(320).collect();
    let resp = html(
        StatusCode::OK,
        &LocalLoginPage {
            tenant_name: &tenant_name,
            app_name: &app,
            notice: done_notice(q.done.as_deref()),
            csrf: &csrf,
            req: &req_id,
            tenant: &tenant_id,
            login: &login,
            trouble_href: &page_href("/login/trouble", &req_id, &tenant_id),
            back_href: &if req_id.is_empty() {
                String::new()
            } else {
                format!("/login?req={}", enc(&req_id))
            },
        },
    );
    with_csrf(&state, resp, &csrf, fresh)
}

/// Turns a pipeline redirect after a POST into 303 (never 307: the password must not be
/// re-posted to the app).
fn see_other(mut resp: Response) -> Response {
    if matches!(
        resp.status(),
        StatusCode::FOUND | StatusCode::TEMPORARY_REDIRECT | StatusCode::PERMANENT_REDIRECT
    ) {
        *resp.status_mut() = StatusCode::SEE_OTHER;
    }
    resp
}

fn busy(state: &AppState, ref_id: &RefId, ctx: &PageCtx, ev: Ev) -> Response {
    refuse(
        state,
        ref_id,
        &Refusal::new(
            LoginError::PasswordBusy {
                retry_after: state.settings.local.busy_retry_after,
            },
            format!(
                "hashing pool full ({} workers busy, queue of {} full)",
                state.settings.local.hash_workers, state.settings.local.hash_queue
            ),
        ),
        ctx,
        ev,
    )
}

/// POST `/login/password`.
async fn password_submit(
    State(state): State<AppState>,
    axum::Extension(ClientIp(ip)): axum::Extension<ClientIp>,
    request: Request,
) -> Response {
    let (headers, form) = read_form(request).await;
    let mut ctx = PageCtx::from_headers(&headers);
    let ip = ip.to_string();
    let form = match form {
        Ok(f) => f,
        Err(reason) => {
            return refuse(
                &state,
                &RefId::generate(),
                &Refusal::new(
                    LoginError::PasswordUnacceptable {
                        reason: "the form was too large or malformed.".into(),
                    },
                    reason,
                ),
                &ctx,
                Ev::default(),
            );
        }
    };
    let field = |k: &str| form.get(k).map(String::as_str).unwrap_or("");
    let (req_id, tenant_param, login, password) = (
        field("req"),
        field("tenant"),
        field("login").trim(),
        field("password"),
    );
    if !csrf_ok(&state, &headers, field("csrf")) {
        return refuse(
            &state,
            &RefId::generate(),
            &Refusal::new(
                LoginError::Csrf,
                "password sign-in POST without a valid CSRF token or from another origin",
            ),
            &ctx,
            Ev::default(),
        );
    }
    if password.len() > state.settings.local.max_password_bytes || login.len() > 320 {
        return refuse(
            &state,
            &RefId::generate(),
            &Refusal::new(
                LoginError::PasswordUnacceptable {
                    reason: format!(
                        "it is longer than {} characters.",
                        state.settings.local.max_password_bytes
                    ),
                },
                "password or login over the length limit; refused before hashing",
            ),
            &ctx,
            Ev::default(),
        );
    }
    let c = match context(&state, req_id, tenant_param, login).await {
        Ok(c) => c,
        Err(r) => return refuse(&state, &RefId::generate(), &r, &ctx, Ev::default()),
    };
    let ref_id = c
        .req
        .as_ref()
        .map(|r| r.ref_id.clone())
        .unwrap_or_else(RefId::generate);
    let tenant_id = c.tenant.as_ref().map(|t| t.id.clone());
    if let Some(r) = &c.req {
        ctx = ctx.app(r.client_id.as_str());
    }
    // The same retry link for every failure, so a wrong password and an unknown login
    // render the same page.
    ctx = ctx.retry(
        page_href(
            "/login/password",
            req_id,
            tenant_id
                .as_ref()
                .map(|t| t.as_str())
                .unwrap_or(tenant_param),
        ),
        "Try again",
    );
    let ev = Ev {
        tenant: tenant_id.clone(),
        client: c.req.as_ref().map(|r| r.client_id.clone()),
        ..Default::default()
    };
    let candidates = match &tenant_id {
        Some(t) if !login.is_empty() => match state.directory.find_local_accounts(t, login).await {
            Ok(v) => v,
            Err(e) => {
                return refuse(
                    &state,
                    &ref_id,
                    &Refusal::new(LoginError::Internal, format!("directory: {e}")),
                    &ctx,
                    ev,
                );
            }
        },
        _ => Vec::new(),
    };
    let invalid = |detail: String, ev: Ev| {
        refuse(
            &state,
            &ref_id,
            &Refusal::new(LoginError::PasswordInvalid, detail),
            &ctx,
            ev.detail(serde_json::json!({ "ip": ip })),
        )
    };
    // Reserve a hashing worker first: when none is free, nothing is counted.
    let admitted = match state.hasher.admit().await {
        Ok(a) => a,
        Err(_) => return busy(&state, &ref_id, &ctx, ev),
    };
    let found = candidates.len();
    let Some((account, cred)) = candidates.into_iter().next().filter(|_| found == 1) else {
        // Unknown (or ambiguous) login: the same cost and the same page as a wrong password.
        match admitted.verify(password.to_owned(), None).await {
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "dummy password check failed"),
        }
        return invalid(
            if found == 0 {
                "no local account of the tenant has this username or email".into()
            } else {
                format!("{found} local accounts match this login; none was tried")
            },
            ev.clone(),
        );
    };
    let ev = Ev {
        account: Some(account.id.clone()),
        ..ev
    };
    let policy = policy_for(&state, &account.tenant).await;
    let claim = match state
        .directory
        .claim_password_attempt(&account.id, state.now(), Some(&ip), &policy)
        .await
    {
        Ok(c) => c,
        Err(e) => {
            return refuse(
                &state,
                &ref_id,
                &Refusal::new(LoginError::Internal, format!("directory: {e}")),
                &ctx,
                ev,
            );
        }
    };
    let count = match claim {
        AttemptClaim::Claimed { count } => count,
        AttemptClaim::Locked { until } => {
            return refuse(
                &state,
                &ref_id,
                &Refusal::new(
                    LoginError::AccountLocked { until },
                    format!(
                        "locked after {} failed attempts; this attempt was not checked",
                        policy.max_failed_attempts
                    ),
                ),
                &ctx,
                ev.detail(serde_json::json!({ "ip": ip })),
            );
        }
        AttemptClaim::NoCredential => {
            let _ = admitted.verify(password.to_owned(), None).await;
            return invalid("account lost its local credentials".into(), ev);
        }
    };
    let ok = match admitted
        .verify(password.to_owned(), cred.password_hash.clone())
        .await
    {
        Ok(ok) => ok && cred.password_hash.is_some(),
        Err(e) => {
            return refuse(
                &state,
                &ref_id,
                &Refusal::new(LoginError::Internal, format!("password check: {e}")),
                &ctx,
                ev,
            );
        }
    };
    if !ok {
        let locked = count >= policy.max_failed_attempts;
        if locked {
            audit::record(
                &state,
                Some(&ref_id),
                "local.locked",
                ev.clone().detail(serde_json::json!({
                    "failed_attempts": count,
                    "until": state.now() + policy.lockout_secs,
                    "ip": ip,
                })),
            );
        }
        return invalid(
            format!(
                "wrong password (failure {count} of {}){}",
                policy.max_failed_attempts,
                if cred.password_hash.is_none() {
                    "; no password set yet (invitation pending)"
                } else {
                    ""
                }
            ),
            ev,
        );
    }
    if let Err(e) = state.directory.password_succeeded(&account.id).await {
        tracing::warn!(ref_id = %ref_id, error = %e, "could not clear the failure counter");
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
        "local.password_ok",
        ev.detail(serde_json::json!({ "ip": ip })),
    );
    let label = account
        .email
        .clone()
        .or_else(|| account.username.clone())
        .unwrap_or_else(|| account.id.to_string());
    see_other(
        pipeline::issue_for(
            &state,
            &headers,
            &ref_id,
            &account,
            None,
            &label,
            c.req.as_ref(),
            None,
            &ctx,
        )
        .await,
    )
}

/// The tenant's sign-in providers, named for the "your password lives there" text: the
/// one that vouches for the typed email's domain when there is one, else all of them.
/// Computed from the input only, never from whether an account exists.
fn providers_text(state: &AppState, tenant: Option<&Tenant>, login: &str) -> String {
    let Some(t) = tenant else {
        return String::new();
    };
    let providers: Vec<_> = state
        .providers
        .for_tenant(&t.id)
        .into_iter()
        .filter(|p| p.record.enabled)
        .collect();
    let domain_match = login
        .rsplit_once('@')
        .map(|(_, d)| d.trim().to_ascii_lowercase())
        .filter(|d| t.domains.iter().any(|td| td.eq_ignore_ascii_case(d)));
    let chosen: Vec<String> = match domain_match {
        Some(_) if providers.len() > 1 => providers
            .iter()
            .filter(|p| matches!(p.record.kind.as_str(), "google" | "microsoft"))
            .map(|p| p.record.display_name.clone())
            .collect(),
        _ => Vec::new(),
    };
    let names = if chosen.is_empty() {
        providers
            .iter()
            .map(|p| p.record.display_name.clone())
            .collect()
    } else {
        chosen
    };
    names.join(" or ")
}

/// GET `/login/trouble`: "Trouble signing in?".
async fn trouble_form(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<FormQuery>,
) -> Response {
    let ctx = PageCtx::from_headers(&headers);
    let req_id = q.req.clone().unwrap_or_default();
    let c = match context(&state, &req_id, q.tenant.as_deref().unwrap_or(""), "").await {
        Ok(c) => c,
        Err(r) => return refuse(&state, &RefId::generate(), &r, &ctx, Ev::default()),
    };
    render_trouble(&state, &headers, &c, &req_id, "", "")
}

fn render_trouble(
    state: &AppState,
    headers: &HeaderMap,
    c: &Context,
    req_id: &str,
    login: &str,
    sent: &str,
) -> Response {
    let tenant_id = c
        .tenant
        .as_ref()
        .map(|t| t.id.to_string())
        .unwrap_or_default();
    let Some((csrf, fresh)) = csrf_token(state, headers) else {
        return (StatusCode::SERVICE_UNAVAILABLE, "try again").into_response();
    };
    let resp = html(
        StatusCode::OK,
        &TroublePage {
            sent,
            providers: &providers_text(state, c.tenant.as_ref(), login),
            csrf: &csrf,
            req: req_id,
            tenant: &tenant_id,
            back_href: &page_href("/login/password", req_id, &tenant_id),
        },
    );
    with_csrf(state, resp, &csrf, fresh)
}

/// POST `/login/trouble`: mails a reset link when the login names exactly one account with
/// a Homeroom password, a "your password lives with <provider>" note (no link) when it
/// names an SSO-only account, and answers the same page whatever happened.
async fn trouble_submit(
    State(state): State<AppState>,
    axum::Extension(ClientIp(ip)): axum::Extension<ClientIp>,
    request: Request,
) -> Response {
    let (headers, form) = read_form(request).await;
    let ctx = PageCtx::from_headers(&headers);
    let form = form.unwrap_or_default();
    let field = |k: &str| form.get(k).map(String::as_str).unwrap_or("");
    let (req_id, login) = (field("req"), field("login").trim());
    if !csrf_ok(&state, &headers, field("csrf")) {
        return refuse(
            &state,
            &RefId::generate(),
            &Refusal::new(
                LoginError::Csrf,
                "reset request POST without a valid CSRF token or from another origin",
            ),
            &ctx,
            Ev::default(),
        );
    }
    let login: String = login.chars().take(320).collect();
    let c = match context(&state, req_id, field("tenant"), &login).await {
        Ok(c) => c,
        Err(r) => return refuse(&state, &RefId::generate(), &r, &ctx, Ev::default()),
    };
    if let Some(t) = &c.tenant
        && !login.is_empty()
    {
        request_reset(&state, t, &login, &ip.to_string()).await;
    }
    let sent = format!(
        "If \u{201c}{login}\u{201d} has a Homeroom password, we have emailed a link to choose a new one. It works for 6 hours, once. Check your spam folder too."
    );
    render_trouble(&state, &headers, &c, req_id, &login, &sent)
}

/// The work behind the reset form; failures are logged, never shown (the page must not
/// tell whether the account exists).
async fn request_reset(state: &AppState, tenant: &Tenant, login: &str, ip: &str) {
    let ev = Ev {
        tenant: Some(tenant.id.clone()),
        ..Default::default()
    };
    let locals = match state.directory.find_local_accounts(&tenant.id, login).await {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!(error = %e, "reset request: directory unavailable");
            return;
        }
    };
    // At most one mail per account per minute, whatever instance takes the request.
    let throttle = |account: &AccountId| {
        let key = format!("mailthrottle:{account}");
        async move {
            state
                .sessions
                .put_json_if_absent(&key, &true, 60)
                .await
                .unwrap_or(false)
        }
    };
    if let [(a, _)] = locals.as_slice() {
        if a.status != AccountStatus::Active || a.email.is_none() {
            audit::record(state, None, "local.reset_not_sent", ev.detail(serde_json::json!({"account": a.id, "why": "account not active or without email", "ip": ip})));
            return;
        }
        if !throttle(&a.id).await {
            audit::record(state, None, "local.reset_not_sent", Ev { account: Some(a.id.clone()), ..ev }.detail(serde_json::json!({"why": "a mail was sent to this account less than a minute ago", "ip": ip})));
            return;
        }
        if let Err(e) = issue_reset(state, &a.id, "self").await {
            tracing::warn!(error = %e, "reset request failed");
        }
        return;
    }
    if !locals.is_empty() {
        audit::record(
            state,
            None,
            "local.reset_not_sent",
            ev.detail(serde_json::json!({"why": "several local accounts match", "ip": ip})),
        );
        return;
    }
    // SSO-only: tell the person by mail where their password lives (no link).
    let Ok(accounts) = state
        .directory
        .find_accounts_by_email(&tenant.id, login)
        .await
    else {
        return;
    };
    let [a] = accounts.as_slice() else {
        return;
    };
    let Ok(links) = state.directory.links_for_account(&a.id).await else {
        return;
    };
    if links.is_empty() || !throttle(&a.id).await {
        return;
    }
    let names = provider_names(state, &links);
    if let Some(m) = mail::sso_only(state, a, &tenant.name, &names)
        && let Err(e) = state.directory.enqueue_mail(&m).await
    {
        tracing::warn!(error = %e, "could not write the SSO-only note");
    }
    audit::record(
        state,
        None,
        "local.reset_sso_only",
        Ev {
            account: Some(a.id.clone()),
            ..ev
        }
        .detail(serde_json::json!({"providers": names, "ip": ip})),
    );
}

pub(crate) fn token_ok(token: &str) -> bool {
    (20..=128).contains(&token.len())
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn reset_invalid(
    state: &AppState,
    ctx: &PageCtx,
    detail: &str,
    tenant: Option<&TenantId>,
) -> Response {
    let ctx = ctx.clone().retry(
        page_href(
            "/login/trouble",
            "",
            tenant.map(|t| t.as_str()).unwrap_or(""),
        ),
        "Ask for a new link",
    );
    refuse(
        state,
        &RefId::generate(),
        &Refusal::new(LoginError::ResetTokenInvalid, detail),
        &ctx,
        Ev {
            tenant: tenant.cloned(),
            ..Default::default()
        },
    )
}

#[allow(clippy::too_many_arguments)]
fn set_password_page(
    state: &AppState,
    headers: &HeaderMap,
    status: StatusCode,
    heading: &str,
    who: &str,
    notice: &str,
    action: &str,
    token: &str,
) -> Response {
    let Some((csrf, fresh)) = csrf_token(state, headers) else {
        return (StatusCode::SERVICE_UNAVAILABLE, "try again").into_response();
    };
    let resp = html(
        status,
        &SetPasswordPage {
            heading,
            who,
            notice,
            action,
            csrf: &csrf,
            token,
            min_len: state.settings.local.min_password_chars,
        },
    );
    with_csrf(state, resp, &csrf, fresh)
}

fn who(a: Option<&Account>) -> String {
    a.and_then(|a| a.email.clone().or_else(|| a.username.clone()))
        .unwrap_or_default()
}

/// GET `/login/reset/{token}`.
async fn reset_form(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(token): Path<String>,
) -> Response {
    let ctx = PageCtx::from_headers(&headers);
    if !token_ok(&token) {
        return reset_invalid(&state, &ctx, "malformed reset token", None);
    }
    let r = match state.directory.reset_by_hash(&sha256_hex(&token)).await {
        Ok(r) => r,
        Err(e) => {
            return refuse(
                &state,
                &RefId::generate(),
                &Refusal::new(LoginError::Internal, format!("directory: {e}")),
                &ctx,
                Ev::default(),
            );
        }
    };
    let Some(r) = r else {
        return reset_invalid(&state, &ctx, "unknown reset token", None);
    };
    if !r.usable(state.now()) {
        let why = if r.used_at.is_some() {
            "reset link already used"
        } else if r.revoked_at.is_some() {
            "reset link replaced by a newer one"
        } else {
            "reset link expired"
        };
        return reset_invalid(&state, &ctx, why, Some(&r.tenant));
    }
    let a = state.directory.get_account(&r.account).await.ok().flatten();
    set_password_page(
        &state,
        &headers,
        StatusCode::OK,
        "Choose a new password",
        &who(a.as_ref()),
        "",
        "/login/reset",
        &token,
    )
}

/// Checks a new password and its confirmation; the reason when refused.
pub(crate) fn new_password_problem(
    state: &AppState,
    password: &str,
    confirm: &str,
) -> Option<String> {
    let s = &state.settings.local;
    if password.len() > s.max_password_bytes {
        Some(format!(
            "it is longer than {} characters.",
            s.max_password_bytes
        ))
    } else if password.chars().count() < s.min_password_chars {
        Some(format!(
            "it needs at least {} characters.",
            s.min_password_chars
        ))
    } else if password != confirm {
        Some("the two passwords are not the same.".into())
    } else {
        None
    }
}

/// Hashes a new password on the pool; the page to show when it cannot.
pub(crate) async fn hash_new(
    state: &AppState,
    password: &str,
    ctx: &PageCtx,
    ev: Ev,
) -> Result<String, Response> {
    let ref_id = RefId::generate();
    let admitted = state
        .hasher
        .admit()
        .await
        .map_err(|_| busy(state, &ref_id, ctx, ev.clone()))?;
    admitted.hash(password.to_owned()).await.map_err(|e| {
        refuse(
            state,
            &ref_id,
            &Refusal::new(LoginError::Internal, format!("hashing: {e}")),
            ctx,
            ev,
        )
    })
}

/// POST `/login/reset`.
async fn reset_submit(State(state): State<AppState>, request: Request) -> Response {
    let (headers, form) = read_form(request).await;
    let ctx = PageCtx::from_headers(&headers);
    let form = form.unwrap_or_default();
    let field = |k: &str| form.get(k).map(String::as_str).unwrap_or("");
    let token = field("token");
    if !csrf_ok(&state, &headers, field("csrf")) {
        return refuse(
            &state,
            &RefId::generate(),
            &Refusal::new(
                LoginError::Csrf,
                "reset POST without a valid CSRF token or from another origin",
            ),
            &ctx,
            Ev::default(),
        );
    }
    if !token_ok(token) {
        return reset_invalid(&state, &ctx, "malformed reset token", None);
    }
    let hash = sha256_hex(token);
    let r = match state.directory.reset_by_hash(&hash).await {
        Ok(Some(r)) if r.usable(state.now()) => r,
        Ok(Some(r)) => {
            return reset_invalid(
                &state,
                &ctx,
                "reset link used, replaced or expired",
                Some(&r.tenant),
            );
        }
        Ok(None) => return reset_invalid(&state, &ctx, "unknown reset token", None),
        Err(e) => {
            return refuse(
                &state,
                &RefId::generate(),
                &Refusal::new(LoginError::Internal, format!("directory: {e}")),
                &ctx,
                Ev::default(),
            );
        }
    };
    let (password, confirm) = (field("password"), field("confirm"));
    if let Some(problem) = new_password_problem(&state, password, confirm) {
        let a = state.directory.get_account(&r.account).await.ok().flatten();
        return set_password_page(
            &state,
            &headers,
            StatusCode::BAD_REQUEST,
            "Choose a new password",
            &who(a.as_ref()),
            &format!("We can't use that password: {problem}"),
            "/login/reset",
            token,
        );
    }
    let ev = Ev {
        tenant: Some(r.tenant.clone()),
        account: Some(r.account.clone()),
        ..Default::default()
    };
    let phc = match hash_new(&state, password, &ctx, ev.clone()).await {
        Ok(h) => h,
        Err(resp) => return resp,
    };
    match state.directory.use_reset(&hash, &phc, state.now()).await {
        Ok(LinkUse::Done) => {
            audit::record(&state, None, "local.reset_used", ev);
            respond::redirect(
                StatusCode::SEE_OTHER,
                &format!(
                    "{}&done=reset",
                    page_href("/login/password", "", r.tenant.as_str())
                ),
            )
        }
        Ok(_) => reset_invalid(
            &state,
            &ctx,
            "reset link used concurrently, replaced or expired",
            Some(&r.tenant),
        ),
        Err(e) => refuse(
            &state,
            &RefId::generate(),
            &Refusal::new(LoginError::Internal, format!("directory: {e}")),
            &ctx,
            ev,
        ),
    }
}

fn invite_invalid(state: &AppState, ctx: &PageCtx, detail: &str) -> Response {
    refuse(
        state,
        &RefId::generate(),
        &Refusal::new(LoginError::InviteInvalid, detail),
        ctx,
        Ev::default(),
    )
}

/// The sign-in page an invitation leads to once used.
fn to_sign_in(tenant: &TenantId, done: &str) -> Response {
    respond::redirect(
        StatusCode::SEE_OTHER,
        &format!(
            "{}&done={done}",
            page_href("/login/password", "", tenant.as_str())
        ),
    )
}

/// GET `/login/invite/{token}`: first use sets a password; any later use goes to sign-in.
async fn invite_form(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(token): Path<String>,
) -> Response {
    let ctx = PageCtx::from_headers(&headers);
    if !token_ok(&token) {
        return invite_invalid(&state, &ctx, "malformed invitation token");
    }
    let inv = match state
        .directory
        .invitation_by_hash(&sha256_hex(&token))
        .await
    {
        Ok(Some(i)) => i,
        Ok(None) => return invite_invalid(&state, &ctx, "unknown invitation token"),
        Err(e) => {
            return refuse(
                &state,
                &RefId::generate(),
                &Refusal::new(LoginError::Internal, format!("directory: {e}")),
                &ctx,
                Ev::default(),
            );
        }
    };
    let password_set = state
        .directory
        .local_credential(&inv.account)
        .await
        .ok()
        .flatten()
        .is_some_and(|c| c.password_set());
    if inv.used_at.is_some() || password_set {
        return to_sign_in(&inv.tenant, "used");
    }
    let a = state
        .directory
        .get_account(&inv.account)
        .await
        .ok()
        .flatten();
    set_password_page(
        &state,
        &headers,
        StatusCode::OK,
        "Welcome! Choose your password",
        &who(a.as_ref()),
        "",
        "/login/invite",
        &token,
    )
}

/// POST `/login/invite`.
async fn invite_submit(State(state): State<AppState>, request: Request) -> Response {
    let (headers, form) = read_form(request).await;
    let ctx = PageCtx::from_headers(&headers);
    let form = form.unwrap_or_default();
    let field = |k: &str| form.get(k).map(String::as_str).unwrap_or("");
    let token = field("token");
    if !csrf_ok(&state, &headers, field("csrf")) {
        return refuse(
            &state,
            &RefId::generate(),
            &Refusal::new(
                LoginError::Csrf,
                "invitation POST without a valid CSRF token or from another origin",
            ),
            &ctx,
            Ev::default(),
        );
    }
    if !token_ok(token) {
        return invite_invalid(&state, &ctx, "malformed invitation token");
    }
    let hash = sha256_hex(token);
    let inv = match state.directory.invitation_by_hash(&hash).await {
        Ok(Some(i)) => i,
        Ok(None) => return invite_invalid(&state, &ctx, "unknown invitation token"),
        Err(e) => {
            return refuse(
                &state,
                &RefId::generate(),
                &Refusal::new(LoginError::Internal, format!("directory: {e}")),
                &ctx,
                Ev::default(),
            );
        }
    };
    if inv.used_at.is_some() {
        return to_sign_in(&inv.tenant, "used");
    }
    let (password, confirm) = (field("password"), field("confirm"));
    if let Some(problem) = new_password_problem(&state, password, confirm) {
        let a = state
            .directory
            .get_account(&inv.account)
            .await
            .ok()
            .flatten();
        return set_password_page(
            &state,
            &headers,
            StatusCode::BAD_REQUEST,
            "Welcome! Choose your password",
            &who(a.as_ref()),
            &format!("We can't use that password: {problem}"),
            "/login/invite",
            token,
        );
    }
    let ev = Ev {
        tenant: Some(inv.tenant.clone()),
        account: Some(inv.account.clone()),
        ..Default::default()
    };
    let phc = match hash_new(&state, password, &ctx, ev.clone()).await {
        Ok(h) => h,
        Err(resp) => return resp,
    };
    match state
        .directory
        .accept_invitation(&hash, &phc, state.now())
        .await
    {
        Ok(LinkUse::Done) => {
            audit::record(&state, None, "local.invitation_used", ev);
            to_sign_in(&inv.tenant, "invited")
        }
        Ok(_) => {
            audit::record(
                &state,
                None,
                "local.invitation_refused",
                ev.detail(serde_json::json!({"why": "already used (concurrently)"})),
            );
            crate::pages::message(
                StatusCode::CONFLICT,
                "This invitation was already used",
                "Your password was already set with this invitation, so this one was not saved. Sign in with the password that was set, or use \u{201c}Trouble signing in?\u{201d}.",
                Some((
                    &page_href("/login/password", "", inv.tenant.as_str()),
                    "Go to sign-in",
                )),
            )
        }
        Err(e) => refuse(
            &state,
            &RefId::generate(),
            &Refusal::new(LoginError::Internal, format!("directory: {e}")),
            &ctx,
            ev,
        ),
    }
}

// ---------------------------------------------------------------------------------------
// Session status for apps
// ---------------------------------------------------------------------------------------

/// `{active, seconds_left, warn_at_seconds_left}` of the browser's SSO session.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SessionStatus {
    pub active: bool,
    pub seconds_left: i64,
    pub warn_at_seconds_left: i64,
    pub idle_secs: i64,
}

/// The registered app whose allowed origins contain exactly `origin`.
async fn app_for_origin(state: &AppState, origin: &str) -> Option<homeroom_directory::AppRecord> {
    if origin.len() > 300 || origin == "null" {
        return None;
    }
    let apps = state.directory.list_apps(None).await.ok()?;
    apps.into_iter()
        .find(|a| a.enabled && a.allowed_origins.iter().any(|o| o == origin))
}

/// `/session/status`: GET peeks (never extends), POST (from the warning's "Stay signed
/// in") refreshes the idle timer, OPTIONS answers a preflight. CORS only for exactly
/// registered app origins, echoed with `Vary: Origin` and credentials; never `*`.
async fn session_status(
    State(state): State<AppState>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    let origin = headers
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let app = match &origin {
        Some(o) if o != &issuer_origin(&state) => app_for_origin(&state, o).await,
        _ => None,
    };
    let cross_origin_refused = origin
        .as_deref()
        .is_some_and(|o| o != issuer_origin(&state) && app.is_none());
    let mut resp = if method == Method::OPTIONS {
        StatusCode::NO_CONTENT.into_response()
    } else if method == Method::POST && cross_origin_refused {
        // Only a registered app (or Homeroom itself) may keep a session alive.
        StatusCode::FORBIDDEN.into_response()
    } else {
        let status = current_status(&state, &headers, method == Method::POST, app.as_ref()).await;
        respond::json_no_store(serde_json::to_value(&status).unwrap_or_default())
    };
    let h = resp.headers_mut();
    h.insert(header::VARY, HeaderValue::from_static("Origin"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let (Some(o), Some(_)) = (&origin, &app)
        && let Ok(v) = HeaderValue::from_str(o)
    {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
        h.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
        if method == Method::OPTIONS {
            h.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static("GET, POST"),
            );
            h.insert(
                header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from_static("600"),
            );
        }
    }
    resp
}

async fn current_status(
    state: &AppState,
    headers: &HeaderMap,
    touch: bool,
    app: Option<&homeroom_directory::AppRecord>,
) -> SessionStatus {
    let inactive = SessionStatus {
        active: false,
        seconds_left: 0,
        warn_at_seconds_left: 0,
        idle_secs: 0,
    };
    let f = flows(state);
    // Same-site callers send the session cookie; apps on other sites only get the status
    // cookie (SameSite=None over https), which grants nothing but this endpoint.
    let session = match cookies::read(headers, cookies::SESSION, state.settings.secure_cookies) {
        CookieValue::One(raw) => {
            if touch {
                f.load_session(&raw).await.ok().flatten().map(|(_, s)| s)
            } else {
                f.peek_session(&raw).await.ok().flatten()
            }
        }
        _ => match cookies::read(headers, cookies::STATUS, state.settings.secure_cookies) {
            CookieValue::One(token) => f
                .session_by_status_token(&token, touch)
                .await
                .ok()
                .flatten(),
            _ => None,
        },
    };
    let Some(s) = session else {
        return inactive;
    };
    // An app sees only sessions of its own tenant.
    if app.is_some_and(|a| a.tenant != s.tenant) {
        return inactive;
    }
    let warning = state
        .directory
        .get_tenant(&s.tenant)
        .await
        .ok()
        .flatten()
        .map(|t| t.session_warning_secs)
        .unwrap_or(300);
    SessionStatus {
        active: true,
        seconds_left: (s.expires_at() - state.now()).max(0),
        warn_at_seconds_left: warning.clamp(0, s.idle_secs.max(0)),
        idle_secs: s.idle_secs,
    }
}

async fn warning_script() -> Response {
    let mut r = include_str!("../templates/session-warning.js").into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/javascript; charset=utf-8"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    // Apps on other origins load it with a plain <script> tag; no CORS needed.
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fast() -> LocalSettings {
        LocalSettings {
            hash_workers: 1,
            hash_queue: 1,
            argon2_m_kib: 64,
            argon2_t: 1,
            ..LocalSettings::default()
        }
    }

    #[tokio::test]
    async fn hashes_verify_and_carry_argon2id() {
        let pool = HashPool::new(&fast());
        let h = pool
            .admit()
            .await
            .unwrap()
            .hash("correct horse".into())
            .await
            .unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{h}");
        assert!(
            pool.admit()
                .await
                .unwrap()
                .verify("correct horse".into(), Some(h.clone()))
                .await
                .unwrap()
        );
        assert!(
            !pool
                .admit()
                .await
                .unwrap()
                .verify("wrong".into(), Some(h))
                .await
                .unwrap()
        );
        assert!(
            !pool
                .admit()
                .await
                .unwrap()
                .verify("x".into(), None)
                .await
                .unwrap()
        );
    }

    #[tokio::test]
    async fn queue_is_bounded_and_busy_is_immediate() {
        let pool = Arc::new(HashPool::new(&fast()));
        let held = pool.admit().await.unwrap();
        // One may wait...
        let p2 = pool.clone();
        let waiter = tokio::spawn(async move { p2.admit().await.map(|_| ()) });
        while pool.waiting() == 0 {
            tokio::task::yield_now().await;
        }
        // ...the next is refused at once.
        let t = std::time::Instant::now();
        assert!(matches!(pool.admit().await, Err(HashError::Busy)));
        assert!(t.elapsed() < std::time::Duration::from_millis(50));
        drop(held);
        waiter.await.unwrap().unwrap();
        assert_eq!(pool.waiting(), 0);
    }

    #[tokio::test]
    async fn a_dropped_waiter_frees_its_queue_slot() {
        let pool = Arc::new(HashPool::new(&fast()));
        let _held = pool.admit().await.unwrap();
        let p2 = pool.clone();
        let waiter = tokio::spawn(async move { p2.admit().await.map(|_| ()) });
        while pool.waiting() == 0 {
            tokio::task::yield_now().await;
        }
        waiter.abort();
        let _ = waiter.await;
        assert_eq!(pool.waiting(), 0);
    }

    #[test]
    fn tokens_are_checked_before_lookup() {
        assert!(token_ok(&crypto::random_token(32).unwrap()));
        assert!(!token_ok("short"));
        assert!(!token_ok(&"a".repeat(200)));
        assert!(!token_ok("abc/../../etc/passwd-xxxxxxxxxxxxxx"));
    }
}
