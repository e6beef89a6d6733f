//! Classroom QR badges: a revocable, high-entropy sign-in link per learner, printed as a
//! QR code on the class sheet.
//!
//! What it owns:
//! - Issuing (`POST /classroom/{kind}/{id}/print`, CSRF, teacher or lead teacher in scope):
//!   a fresh 256-bit token per learner, stored only as its SHA-256, the learner's earlier
//!   badges revoked in the same transaction, the QR code rendered server-side as inline SVG
//!   ([`qr_svg`]: no script, nothing for the CSP to refuse), the sheet shown once.
//! - Using (`GET /badge/{token}`): rate-limited per address (outside the school networks)
//!   and per badge; refused when unknown, revoked, used outside the tenant's trusted
//!   networks (unless the tenant is in [`BadgeSettings::anywhere`]), or when the learner's
//!   account is archived or suspended; otherwise the pipeline's own Issue step
//!   ([`crate::pipeline::issue_for`], as the code sign-in does), continuing to the app the
//!   sheet was printed for, or to the signed-in page.
//! - Revoking: per learner or for the whole class (`POST /classroom/{kind}/{id}/badges/revoke`,
//!   teacher pages; the admin API uses [`revoke`]). A new sign-in code revokes the
//!   learner's badge too (in the directory, with the code).
//!
//! Every issue, use and revocation is an audit event (`classroom.badges_issued`,
//! `classroom.badge_used`, `classroom.badges_revoked`); refusals are `classroom.badge_*`
//! catalogue entries. Tokens are never logged: events name a badge by a hash prefix.

use crate::AppState;
use crate::audit::{self, Ev};
use crate::classroom::{self, Scope, Teacher, enc, not_yours};
use crate::flows::Launch;
use crate::local::csrf_ok;
use crate::middleware::ClientIp;
use crate::pipeline::{self, Refusal, refuse};
use crate::respond::{self, PageCtx};
use axum::Router;
use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::{get, post};
use homeroom_core::crypto::{self, sha256_hex};
use homeroom_core::{AccountId, ClientId, LoginError, RefId, TenantId};
use homeroom_directory::AccountStatus;
use homeroom_directory::badges::NewBadge;
use http::{HeaderMap, StatusCode};
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

/// Random bytes in a badge token (256 bits).
pub const TOKEN_BYTES: usize = 32;

/// Where badges may be used.
#[derive(Debug, Clone, Default)]
pub struct BadgeSettings {
    /// Each tenant's school networks (its `trusted_networks`).
    pub trusted: HashMap<TenantId, Vec<ipnet::IpNet>>,
    /// Tenants whose badges work from any address (`classroom_badges_anywhere`).
    pub anywhere: HashSet<TenantId>,
}

impl BadgeSettings {
    /// Whether a badge of `tenant` may be used from `ip`.
    pub fn allows(&self, tenant: &TenantId, ip: IpAddr) -> bool {
        self.anywhere.contains(tenant)
            || self
                .trusted
                .get(tenant)
                .is_some_and(|nets| nets.iter().any(|n| n.contains(&ip)))
    }
}

/// Why a QR code could not be made.
#[derive(Debug, thiserror::Error)]
#[error("QR code: {0}")]
pub struct QrError(String);

/// The QR code of `data` as an inline `<svg>` element (no XML prolog, no script, no style
/// attribute), black on white with its quiet zone, at least 160 px square.
pub fn qr_svg(data: &str) -> Result<String, QrError> {
    use qrcode::render::svg;
    let code = qrcode::QrCode::with_error_correction_level(data.as_bytes(), qrcode::EcLevel::M)
        .map_err(|e| QrError(e.to_string()))?;
    let doc = code
        .render::<svg::Color<'_>>()
        .min_dimensions(160, 160)
        .quiet_zone(true)
        .build();
    match doc.find("<svg") {
        Some(i) => Ok(doc[i..].to_owned()),
        None => Err(QrError("renderer returned no <svg> element".into())),
    }
}

/// A fresh badge token (base64url of [`TOKEN_BYTES`] random bytes) and its stored hash.
fn new_token() -> Result<(String, String), crypto::RandomError> {
    let token = crypto::random_token(TOKEN_BYTES)?;
    let hash = sha256_hex(&token);
    Ok((token, hash))
}

/// Whether `token` has the shape of a badge token (43 base64url characters).
fn well_formed(token: &str) -> bool {
    token.len() == TOKEN_BYTES.div_ceil(3) * 4 - 1
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The badge's link.
pub fn badge_url(state: &AppState, token: &str) -> String {
    state.settings.url(&format!("/badge/{token}"))
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/badge/{token}", get(use_badge))
        .route("/classroom/{kind}/{id}/badges/revoke", post(revoke_page))
}

// ---------------------------------------------------------------- issue

/// Issues a new badge to every learner in scope `s` (revoking their earlier ones), all or
/// nothing, audited. Returns each learner's QR code (inline SVG).
pub(crate) async fn issue(
    state: &AppState,
    s: &Scope,
    client: Option<&ClientId>,
    by: &str,
    ev: Ev,
) -> Result<HashMap<AccountId, String>, String> {
    let mut news = Vec::with_capacity(s.learners.len());
    let mut svgs = HashMap::with_capacity(s.learners.len());
    for account in s.accounts() {
        let (token, hash) = new_token().map_err(|e| e.to_string())?;
        let svg = qr_svg(&badge_url(state, &token)).map_err(|e| e.to_string())?;
        svgs.insert(account.clone(), svg);
        news.push(NewBadge {
            account,
            token_hash: hash,
            client: client.cloned(),
        });
    }
    let revoked = state
        .directory
        .issue_badges(&s.tenant, &news, by, state.now())
        .await
        .map_err(|e| e.to_string())?;
    audit::record(
        state,
        None,
        "classroom.badges_issued",
        ev.detail(serde_json::json!({
            "by": by, "scope": s.kind, "id": s.id,
            "learners": news.iter().map(|b| b.account.as_str()).collect::<Vec<_>>(),
            "badges": news.iter().map(|b| &b.token_hash[..12]).collect::<Vec<_>>(),
            "client": client.map(ClientId::as_str),
            "earlier_revoked": revoked,
        })),
    );
    Ok(svgs)
}

/// POST `/classroom/{kind}/{id}/print` (`csrf`, `app`: a client id of the tenant or
/// empty): the class sheet with a new QR badge on every card.
pub(crate) async fn print_with_badges(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((kind, id)): Path<(String, String)>,
    form: Result<axum::Form<HashMap<String, String>>, axum::extract::rejection::FormRejection>,
) -> Response {
    let form = form.map(|axum::Form(m)| m).unwrap_or_default();
    let field = |k: &str| form.get(k).map(String::as_str).unwrap_or("");
    let t = match classroom::teacher(&state, &headers).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    if !csrf_ok(&state, &headers, field("csrf")) {
        return csrf_refusal(&state, &headers, &t, "badge print");
    }
    let s = match classroom::scope(&state, &headers, &t, &kind, &id).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let back = PageCtx::from_headers(&headers).retry(format!("{}/print", s.base()), "Back");
    if !state.settings.classroom.enabled_for(&s.tenant) {
        return refuse(
            &state,
            &RefId::generate(),
            &Refusal::new(
                LoginError::ClassroomCodesDisabled,
                format!(
                    "badges: classroom sign-in is not enabled for tenant {}",
                    s.tenant
                ),
            ),
            &back,
            t.ev(),
        );
    }
    let client = match field("app").trim() {
        "" => None,
        app => {
            let cid = ClientId::new(app.chars().take(200).collect::<String>());
            match state.app(&cid).await {
                Ok(Some(a)) if a.enabled && a.tenant == s.tenant => Some(cid),
                Ok(_) => {
                    return refuse(
                        &state,
                        &RefId::generate(),
                        &Refusal::new(
                            LoginError::TargetNotAllowed,
                            format!(
                                "badge print names app {cid}, not an enabled app of the tenant"
                            ),
                        ),
                        &back,
                        t.ev(),
                    );
                }
                Err(e) => return classroom::internal(&state, &headers, e),
            }
        }
    };
    let svgs = match issue(&state, &s, client.as_ref(), &t.actor(), t.ev()).await {
        Ok(m) => m,
        Err(e) => return classroom::internal(&state, &headers, e),
    };
    classroom::sheet(&state, &headers, &t, &s, Some(&svgs)).await
}

fn csrf_refusal(state: &AppState, headers: &HeaderMap, t: &Teacher, what: &str) -> Response {
    refuse(
        state,
        &RefId::generate(),
        &Refusal::new(
            LoginError::Csrf,
            format!("{what} without a valid CSRF token or from another origin"),
        ),
        &PageCtx::from_headers(headers),
        t.ev(),
    )
}

// ---------------------------------------------------------------- revoke

/// Why badges could not be revoked. Nothing was changed.
#[derive(Debug)]
pub(crate) enum RevokeError {
    /// The learner named is not in the scope.
    NotInScope(String),
    Internal(String),
}

/// Revokes the live badges of one learner of scope `s` (`learner`: their roster
/// sourcedId) or of every learner in it; audited. Returns how many were revoked.
pub(crate) async fn revoke(
    state: &AppState,
    s: &Scope,
    learner: Option<&str>,
    by: &str,
    ev: Ev,
) -> Result<u64, RevokeError> {
    let accounts = match learner {
        Some(u) => match s.learner(u).and_then(|m| m.account.clone()) {
            Some(a) => vec![a],
            None => {
                return Err(RevokeError::NotInScope(format!(
                    "learner {u:?} is not in {} {}",
                    s.kind, s.id
                )));
            }
        },
        None => s.accounts(),
    };
    let n = state
        .directory
        .revoke_badges(&s.tenant, &accounts, by, state.now())
        .await
        .map_err(|e| RevokeError::Internal(e.to_string()))?;
    audit::record(
        state,
        None,
        "classroom.badges_revoked",
        ev.detail(serde_json::json!({
            "by": by, "scope": s.kind, "id": s.id, "reason": "revoked",
            "learners": accounts.iter().map(AccountId::as_str).collect::<Vec<_>>(),
            "revoked": n,
        })),
    );
    Ok(n)
}

/// POST `/classroom/{kind}/{id}/badges/revoke` (`csrf`, `learner`: one learner, or empty
/// for everyone in the class or school).
async fn revoke_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((kind, id)): Path<(String, String)>,
    form: Result<axum::Form<HashMap<String, String>>, axum::extract::rejection::FormRejection>,
) -> Response {
    let form = form.map(|axum::Form(m)| m).unwrap_or_default();
    let field = |k: &str| form.get(k).map(String::as_str).unwrap_or("");
    let t = match classroom::teacher(&state, &headers).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    if !csrf_ok(&state, &headers, field("csrf")) {
        return csrf_refusal(&state, &headers, &t, "badge revocation");
    }
    let s = match classroom::scope(&state, &headers, &t, &kind, &id).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let learner = Some(field("learner")).filter(|l| !l.is_empty());
    match revoke(&state, &s, learner, &t.actor(), t.ev()).await {
        Ok(_) => {}
        Err(RevokeError::NotInScope(d)) => return not_yours(&state, &headers, &t, d),
        Err(RevokeError::Internal(e)) => return classroom::internal(&state, &headers, e),
    }
    let to = match learner {
        Some(u) => format!("{}/learner/{}?done=badges", s.base(), enc(u)),
        None => format!("{}?done=badges", s.base()),
    };
    respond::redirect(StatusCode::SEE_OTHER, &to)
}

// ---------------------------------------------------------------- use

/// GET `/badge/{token}`: signs the learner in.
async fn use_badge(
    State(state): State<AppState>,
    axum::Extension(ClientIp(ip)): axum::Extension<ClientIp>,
    headers: HeaderMap,
    Path(token): Path<String>,
) -> Response {
    let ctx = PageCtx::from_headers(&headers).retry("/login/classroom", "Sign in with a code");
    let ref_id = RefId::generate();
    let mut ev = Ev::default();
    let refusal = |err: LoginError, detail: String, ev: Ev| {
        refuse(
            &state,
            &ref_id,
            &Refusal::new(err, detail),
            &ctx,
            ev.detail(serde_json::json!({ "ip": ip.to_string() })),
        )
    };
    // Addresses outside every school network are limited before anything is looked up.
    let school_net = state
        .settings
        .limits
        .trusted_networks
        .iter()
        .any(|n| n.contains(&ip));
    if !school_net
        && let Some(retry_after) =
            classroom::limited(&state, &format!("classroom:badge:ip:{ip}")).await
    {
        return refusal(
            LoginError::TooManyAttempts { retry_after },
            "badge rate limit (address)".into(),
            ev,
        );
    }
    if !well_formed(&token) {
        return refusal(
            LoginError::ClassroomBadgeInvalid,
            "badge token malformed".into(),
            ev,
        );
    }
    let hash = sha256_hex(&token);
    let badge = match state.directory.badge_by_hash(&hash).await {
        Ok(Some(b)) => b,
        Ok(None) => {
            return refusal(
                LoginError::ClassroomBadgeInvalid,
                "no badge has this token".into(),
                ev,
            );
        }
        Err(e) => return refusal(LoginError::Internal, format!("directory: {e}"), ev),
    };
    ev.tenant = Some(badge.tenant.clone());
    ev.account = Some(badge.account.clone());
    ev.client = badge.client.clone();
    let tag = &hash[..12];
    if let Some(retry_after) = classroom::limited(&state, &format!("classroom:badge:{hash}")).await
    {
        return refusal(
            LoginError::TooManyAttempts { retry_after },
            format!("badge rate limit (badge {tag})"),
            ev,
        );
    }
    if let Some(at) = badge.revoked_at {
        return refusal(
            LoginError::ClassroomBadgeRevoked,
            format!(
                "badge {tag} was revoked at {at} by {}",
                badge.revoked_by.as_deref().unwrap_or("?")
            ),
            ev,
        );
    }
    if !state.settings.classroom.enabled_for(&badge.tenant) {
        return refusal(
            LoginError::ClassroomCodesDisabled,
            format!(
                "badge {tag}: classroom sign-in is not enabled for tenant {}",
                badge.tenant
            ),
            ev,
        );
    }
    if !state.settings.classroom.badges.allows(&badge.tenant, ip) {
        return refusal(
            LoginError::ClassroomBadgeNetwork,
            format!(
                "badge {tag} used from {ip}, outside the trusted networks of tenant {}",
                badge.tenant
            ),
            ev,
        );
    }
    let account = match state.directory.get_account(&badge.account).await {
        Ok(Some(a)) if a.tenant == badge.tenant => a,
        Ok(_) => {
            return refusal(
                LoginError::ClassroomBadgeInvalid,
                format!("badge {tag}: the learner's account is gone"),
                ev,
            );
        }
        Err(e) => return refusal(LoginError::Internal, format!("directory: {e}"), ev),
    };
    let status = match account.status {
        AccountStatus::Active => None,
        AccountStatus::Archived => Some(LoginError::AccountArchived),
        AccountStatus::Suspended => Some(LoginError::AccountSuspended),
    };
    if let Some(err) = status {
        return refusal(
            err,
            format!("badge {tag}: account {} is {}", account.id, account.status),
            ev,
        );
    }
    match state.directory.badge_used(&hash, state.now()).await {
        Ok(true) => {}
        Ok(false) => {
            return refusal(
                LoginError::ClassroomBadgeRevoked,
                format!("badge {tag} was revoked while in use"),
                ev,
            );
        }
        Err(e) => return refusal(LoginError::Internal, format!("directory: {e}"), ev),
    }
    // The app the sheet was printed for, while it is still an enabled app of the tenant.
    let launch = match &badge.client {
        Some(c) => match state.app(c).await {
            Ok(Some(a)) if a.enabled && a.tenant == badge.tenant => Some(Launch {
                app: c.clone(),
                target: None,
            }),
            _ => None,
        },
        None => None,
    };
    audit::record(
        &state,
        Some(&ref_id),
        "classroom.badge_used",
        ev.detail(serde_json::json!({
            "ip": ip.to_string(), "badge": tag, "continues_to": launch.as_ref().map(|l| l.app.as_str()),
        })),
    );
    let label = account
        .username
        .clone()
        .or_else(|| account.name.clone())
        .unwrap_or_else(|| account.id.to_string());
    let mut resp = pipeline::issue_for(
        &state,
        &headers,
        &ref_id,
        &account,
        None,
        &label,
        None,
        launch.as_ref(),
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn tokens_are_256_bit_and_well_formed() {
        let (t, h) = new_token().unwrap();
        assert!(well_formed(&t), "{t}");
        assert_eq!(h, sha256_hex(&t));
        assert_ne!(new_token().unwrap().0, t);
        assert!(!well_formed(&t[1..]));
        assert!(!well_formed(&format!("{}!", &t[1..])));
        assert!(!well_formed(""));
    }

    #[test]
    fn badges_need_a_trusted_network_or_the_override() {
        let t1 = TenantId::new("t1");
        let mut s = BadgeSettings::default();
        s.trusted
            .insert(t1.clone(), vec!["10.1.0.0/16".parse().unwrap()]);
        assert!(s.allows(&t1, "10.1.2.3".parse().unwrap()));
        assert!(!s.allows(&t1, "10.2.0.1".parse().unwrap()));
        assert!(!s.allows(&TenantId::new("t2"), "10.1.2.3".parse().unwrap()));
        s.anywhere.insert(t1.clone());
        assert!(s.allows(&t1, "203.0.113.9".parse().unwrap()));
    }

    #[test]
    fn qr_svg_is_inline_and_style_free() {
        let svg = qr_svg("https://homeroom.example/badge/abc").unwrap();
        assert!(svg.starts_with("<svg"));
        assert!(!svg.contains("<?xml") && !svg.contains("style=") && !svg.contains("<script"));
    }
}
