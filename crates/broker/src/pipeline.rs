//! The one login pipeline. Every way in becomes the same steps:
//!
//! 1. **Start**: `/oauth2/authorize` validates the app's request (in `oauth`) and calls
//!    [`resume`]; a live SSO session for the app's tenant short-circuits to Issue.
//! 2. **Choose**: the login page (`/login`) shows the tenant's providers and "enter your
//!    school email" (home-realm discovery); `login_hint` and the `idp` hint skip it.
//! 3. **Upstream**: [`start_upstream`] mints `state`, `nonce` and the PKCE verifier, keeps
//!    them server-side bound to this browser (flow cookie) and redirects.
//! 4. **Callback**: `/callback/{provider}` consumes the hop once, checks the browser
//!    binding, and lets the adapter validate the protocol into an `UpstreamIdentity`.
//! 5. **Decide**: [`decide`] maps the identity to an account (link, then verified email
//!    for the tenant's domains, else a new account) and checks its status.
//! 6. **Issue**: a new SSO session (rotated id), then the code to the app.
//!
//! Every step writes an audit event under the attempt's reference id, and every refusal
//! is a catalogue entry rendered by `respond::error_page`.

use crate::AppState;
use crate::audit::{self, Ev};
use crate::cookies::{self, CookieValue};
use crate::flows::{AuthCode, AuthRequest, Launch, SsoSession, UpstreamHop, flows};
use crate::guards;
use crate::middleware::ClientIp;
use crate::pages::{LoginPage, ProviderButton, html};
use crate::registry::Registered;
use crate::respond::{self, PageCtx};
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use homeroom_core::crypto::{self, sha256_hex};
use homeroom_core::identity::redact_claims;
use homeroom_core::{AccountId, LoginError, ProviderId, RefId, TenantId, UpstreamIdentity};
use homeroom_directory::{Account, AccountStatus, ProviderLink};
use homeroom_providers::{BeginLogin, Callback, UpstreamFlow};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde::Deserialize;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/login", get(login_page))
        .route("/login/start", get(login_start))
        .route("/login/discover", get(login_discover))
        .route("/callback/{provider}", get(callback))
        .route("/launch/{provider}", get(launch))
}

/// A refusal inside the pipeline: the catalogue entry plus the private detail for IT.
pub struct Refusal {
    pub error: LoginError,
    pub detail: String,
}

impl Refusal {
    pub fn new(error: LoginError, detail: impl Into<String>) -> Self {
        Self {
            error,
            detail: detail.into(),
        }
    }
    fn internal(detail: impl std::fmt::Display) -> Self {
        Self {
            error: LoginError::Internal,
            detail: detail.to_string(),
        }
    }
}

/// Renders a refusal and records it.
pub fn refuse(state: &AppState, ref_id: &RefId, r: &Refusal, ctx: &PageCtx, ev: Ev) -> Response {
    if matches!(r.error, LoginError::Internal) {
        tracing::error!(ref_id = %ref_id, detail = %r.detail, "internal error in login pipeline");
    }
    audit::refusal(state, ref_id, &r.error, &r.detail, ev);
    respond::error_page(&r.error, ref_id, state.now(), ctx)
}

fn store_err(e: homeroom_session::StoreError) -> Refusal {
    Refusal::internal(format!("session store: {e}"))
}
fn dir_err(e: homeroom_directory::DirectoryError) -> Refusal {
    Refusal::internal(format!("directory: {e}"))
}

/// Step 1 continued: an authorization request was validated. Use the SSO session when it
/// satisfies the request, otherwise go to the login page (or straight upstream on a hint).
pub async fn resume(
    state: &AppState,
    headers: &HeaderMap,
    req: AuthRequest,
    browser: &str,
) -> Response {
    let ctx = PageCtx::from_headers(headers).app(req.client_id.as_str());
    let ev = Ev {
        tenant: Some(req.tenant.clone()),
        client: Some(req.client_id.clone()),
        ..Default::default()
    };
    if let Some(limited) = crate::limits::tenant(state, &req.tenant, headers, &req.ref_id).await {
        return limited;
    }
    let wants_login = req
        .prompt
        .iter()
        .any(|p| p == "login" || p == "select_account");
    let session = match current_session(state, headers).await {
        Ok(s) => s,
        Err(r) => return refuse(state, &req.ref_id, &r, &ctx, ev),
    };
    let usable = session.filter(|(_, s)| {
        // max_age=0 is prompt=login (OIDC Core §3.1.2.1): never fresh enough.
        s.tenant == req.tenant
            && req
                .max_age
                .is_none_or(|m| m > 0 && state.now() - s.auth_time <= m)
    });
    if let Some((hash, s)) = usable.as_ref().filter(|_| !wants_login) {
        audit::record(
            state,
            Some(&req.ref_id),
            "login.session_reused",
            Ev {
                account: Some(s.account.clone()),
                ..ev
            },
        );
        return issue_code(state, &req, hash, s).await;
    }
    if req.prompt.iter().any(|p| p == "none") {
        audit::record(state, Some(&req.ref_id), "login.login_required", ev);
        return respond::app_error_redirect(
            &req.redirect_uri,
            "login_required",
            "the user is not signed in",
            req.state.as_deref(),
            &state.settings.issuer,
            &req.ref_id,
        );
    }
    if let Err(e) = flows(state).put_auth_request(&req).await {
        return refuse(state, &req.ref_id, &store_err(e), &ctx, ev);
    }
    // Hints skip the page: an explicit provider, or an email whose domain names one.
    if let Some(p) = req
        .idp_hint
        .as_deref()
        .and_then(|id| state.providers.get(&ProviderId::new(id)))
        && p.tenant() == &req.tenant
        && p.record.enabled
    {
        return start_upstream(
            state,
            headers,
            browser,
            Some(&req),
            &p,
            upstream_prompt(&req),
            req.login_hint.clone(),
        )
        .await;
    }
    if let Some(hint) = req.login_hint.as_deref()
        && let Some(p) = provider_for_email(state, &req.tenant, hint).await
    {
        return start_upstream(
            state,
            headers,
            browser,
            Some(&req),
            &p,
            upstream_prompt(&req),
            Some(hint.to_owned()),
        )
        .await;
    }
    respond::redirect(StatusCode::FOUND, &format!("/login?req={}", req.id))
}

/// What to ask the upstream for, from the app's request: `select_account` as asked;
/// `login` when the app asked for a fresh sign-in (`prompt=login`, or any `max_age`:
/// the upstream's own session may be older than the app allows, and Homeroom's
/// `auth_time` must not claim a sign-in that did not happen).
fn upstream_prompt(req: &AuthRequest) -> Option<String> {
    if req.prompt.iter().any(|p| p == "select_account") {
        Some("select_account".into())
    } else if req.prompt.iter().any(|p| p == "login") || req.max_age.is_some() {
        Some("login".into())
    } else {
        None
    }
}

/// The browser's SSO session, if its cookie is present, unambiguous and live.
pub async fn current_session(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Option<(String, SsoSession)>, Refusal> {
    match cookies::read(headers, cookies::SESSION, state.settings.secure_cookies) {
        CookieValue::One(raw) => flows(state).load_session(&raw).await.map_err(store_err),
        CookieValue::Ambiguous => {
            audit::record(state, None, "session.cookie_ambiguous", Ev::default());
            Ok(None)
        }
        CookieValue::Absent => Ok(None),
    }
}

async fn provider_for_email(
    state: &AppState,
    tenant: &TenantId,
    email: &str,
) -> Option<Registered> {
    let domain = email.rsplit_once('@')?.1.trim().to_ascii_lowercase();
    let t = state.tenant_by_domain(&domain).await.ok()??;
    if &t.id != tenant {
        return None;
    }
    let providers = state.providers.for_tenant(tenant);
    // Prefer a provider that vouches for the domain (Google/Microsoft), else the only one.
    providers
        .iter()
        .find(|p| matches!(p.record.kind.as_str(), "google" | "microsoft"))
        .or_else(|| (providers.len() == 1).then(|| &providers[0]))
        .cloned()
}

#[derive(Deserialize)]
struct ReqQuery {
    req: Option<String>,
    provider: Option<String>,
    email: Option<String>,
    prompt: Option<String>,
    tenant: Option<String>,
}

/// Step 2: the login page.
async fn login_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<ReqQuery>,
) -> Response {
    let ctx = PageCtx::from_headers(&headers);
    let req = match load_req(&state, q.req.as_deref()).await {
        Ok(r) => r,
        Err((ref_id, r)) => return refuse(&state, &ref_id, &r, &ctx, Ev::default()),
    };
    let (tenant_id, req_id, app_name) = match &req {
        Some(r) => {
            let app = state
                .directory
                .get_app(&r.client_id)
                .await
                .ok()
                .flatten()
                .map(|a| a.name)
                .unwrap_or_default();
            (Some(r.tenant.clone()), r.id.clone(), app)
        }
        None => (q.tenant.map(TenantId::new), String::new(), String::new()),
    };
    render_login(
        &state,
        tenant_id.as_ref(),
        &req_id,
        &app_name,
        q.email.as_deref().unwrap_or(""),
        "",
    )
    .await
}

async fn render_login(
    state: &AppState,
    tenant: Option<&TenantId>,
    req_id: &str,
    app_name: &str,
    email: &str,
    notice: &str,
) -> Response {
    let (tenant_name, providers) = match tenant {
        Some(t) => {
            let name = state
                .directory
                .get_tenant(t)
                .await
                .ok()
                .flatten()
                .map(|t| t.name)
                .unwrap_or_default();
            (name, state.providers.for_tenant(t))
        }
        None => (String::new(), Vec::new()),
    };
    let buttons = providers
        .iter()
        .map(|p| ProviderButton {
            name: p.record.display_name.clone(),
            href: if req_id.is_empty() {
                format!("/login/start?provider={}", enc(p.record.id.as_str()))
            } else {
                format!(
                    "/login/start?req={}&provider={}",
                    enc(req_id),
                    enc(p.record.id.as_str())
                )
            },
        })
        .collect();
    html(
        StatusCode::OK,
        &LoginPage {
            tenant_name: &tenant_name,
            app_name,
            providers: buttons,
            req: req_id,
            email,
            notice,
        },
    )
}

fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Loads the pending authorization request named by `req` (None when absent).
async fn load_req(
    state: &AppState,
    req: Option<&str>,
) -> Result<Option<AuthRequest>, (RefId, Refusal)> {
    let Some(id) = req.filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    match flows(state).get_auth_request(id).await {
        Ok(Some(r)) => Ok(Some(r)),
        Ok(None) => Err((
            RefId::generate(),
            Refusal::new(
                LoginError::FlowExpired,
                "authorization request unknown or expired",
            ),
        )),
        Err(e) => Err((RefId::generate(), store_err(e))),
    }
}

/// Step 2 → 3: the student picked a provider.
async fn login_start(
    State(state): State<AppState>,
    axum::Extension(ClientIp(ip)): axum::Extension<ClientIp>,
    headers: HeaderMap,
    Query(q): Query<ReqQuery>,
) -> Response {
    let ctx = PageCtx::from_headers(&headers);
    let (browser, _) = guards::browser_key(&state, &headers, ip);
    let req = match load_req(&state, q.req.as_deref()).await {
        Ok(r) => r,
        Err((ref_id, r)) => return refuse(&state, &ref_id, &r, &ctx, Ev::default()),
    };
    let ref_id = req
        .as_ref()
        .map(|r| r.ref_id.clone())
        .unwrap_or_else(RefId::generate);
    let pid = ProviderId::new(q.provider.unwrap_or_default());
    let Some(p) = state.providers.get(&pid) else {
        let r = Refusal::new(
            LoginError::ProviderUnknown {
                provider: pid.to_string(),
            },
            "no such provider",
        );
        return refuse(
            &state,
            &ref_id,
            &r,
            &ctx,
            Ev {
                provider: Some(pid),
                ..Default::default()
            },
        );
    };
    if !p.record.enabled || req.as_ref().is_some_and(|r| &r.tenant != p.tenant()) {
        let r = Refusal::new(
            LoginError::ProviderDisabled {
                provider: p.record.display_name.clone(),
            },
            "provider disabled or of another tenant",
        );
        return refuse(
            &state,
            &ref_id,
            &r,
            &ctx,
            Ev {
                provider: Some(pid),
                ..Default::default()
            },
        );
    }
    let prompt = q
        .prompt
        .filter(|p| matches!(p.as_str(), "select_account" | "login"))
        .or_else(|| req.as_ref().and_then(upstream_prompt));
    let hint = req.as_ref().and_then(|r| r.login_hint.clone());
    start_upstream(&state, &headers, &browser, req.as_ref(), &p, prompt, hint).await
}

/// Home-realm discovery by email domain.
async fn login_discover(
    State(state): State<AppState>,
    axum::Extension(ClientIp(ip)): axum::Extension<ClientIp>,
    headers: HeaderMap,
    Query(q): Query<ReqQuery>,
) -> Response {
    let ctx = PageCtx::from_headers(&headers);
    let (browser, _) = guards::browser_key(&state, &headers, ip);
    let req = match load_req(&state, q.req.as_deref()).await {
        Ok(r) => r,
        Err((ref_id, r)) => return refuse(&state, &ref_id, &r, &ctx, Ev::default()),
    };
    let ref_id = req
        .as_ref()
        .map(|r| r.ref_id.clone())
        .unwrap_or_else(RefId::generate);
    let email = q.email.unwrap_or_default().trim().to_owned();
    let domain = email
        .rsplit_once('@')
        .map(|(_, d)| d.to_ascii_lowercase())
        .unwrap_or_default();
    if domain.is_empty() || email.len() > 320 {
        let tenant = req.as_ref().map(|r| r.tenant.clone());
        let req_id = req.as_ref().map(|r| r.id.clone()).unwrap_or_default();
        return render_login(
            &state,
            tenant.as_ref(),
            &req_id,
            "",
            "",
            "Type your whole school email, like name@school.org.",
        )
        .await;
    }
    let tenant = match state.tenant_by_domain(&domain).await {
        Ok(t) => t,
        Err(e) => return refuse(&state, &ref_id, &dir_err(e), &ctx, Ev::default()),
    };
    let Some(tenant) = tenant.filter(|t| req.as_ref().is_none_or(|r| r.tenant == t.id)) else {
        let r = Refusal::new(
            LoginError::UnknownDomain {
                domain: domain.clone(),
            },
            "no tenant (of this app) has that domain",
        );
        let ctx = match &req {
            Some(r) => ctx.retry(format!("/login?req={}", r.id), "Back to sign-in"),
            None => ctx,
        };
        return refuse(&state, &ref_id, &r, &ctx, Ev::default());
    };
    let Some(p) = provider_for_email(&state, &tenant.id, &email).await else {
        let req_id = req.as_ref().map(|r| r.id.clone()).unwrap_or_default();
        return render_login(
            &state,
            Some(&tenant.id),
            &req_id,
            "",
            &email,
            "Pick how your school signs you in.",
        )
        .await;
    };
    start_upstream(
        &state,
        &headers,
        &browser,
        req.as_ref(),
        &p,
        req.as_ref().and_then(upstream_prompt),
        Some(email),
    )
    .await
}

/// Step 3: mint the protocol state, bind it to this browser, redirect upstream.
pub async fn start_upstream(
    state: &AppState,
    headers: &HeaderMap,
    browser: &str,
    req: Option<&AuthRequest>,
    p: &Registered,
    prompt: Option<String>,
    login_hint: Option<String>,
) -> Response {
    start_upstream_for(state, headers, browser, req, p, prompt, login_hint, None).await
}

/// [`start_upstream`] for a portal launch: the hop remembers which app to continue to.
#[allow(clippy::too_many_arguments)]
async fn start_upstream_for(
    state: &AppState,
    headers: &HeaderMap,
    browser: &str,
    req: Option<&AuthRequest>,
    p: &Registered,
    prompt: Option<String>,
    login_hint: Option<String>,
    launch: Option<Launch>,
) -> Response {
    let ref_id = req
        .map(|r| r.ref_id.clone())
        .unwrap_or_else(RefId::generate);
    let ctx = PageCtx::from_headers(headers).provider(p.record.display_name.clone());
    let ev = Ev {
        tenant: Some(p.tenant().clone()),
        provider: Some(p.record.id.clone()),
        client: req.map(|r| r.client_id.clone()),
        ..Default::default()
    };
    // ---- SAML branch: a provider with the SAML capability starts with an AuthnRequest
    // (hop, request-id index and browser binding in `crate::saml::start`). ----
    if p.provider.as_saml().is_some() {
        return crate::saml::start(state, headers, browser, req, p, prompt, launch, ref_id).await;
    }
    // ---- end SAML branch ----
    let Some(redirect) = p.provider.as_redirect() else {
        let r = Refusal::new(
            LoginError::ProviderDisabled {
                provider: p.record.display_name.clone(),
            },
            "provider has no redirect login",
        );
        return refuse(state, &ref_id, &r, &ctx, ev);
    };
    if let Some(err) =
        guards::circuit_open(state, p.record.id.as_str(), &p.record.display_name).await
    {
        return refuse(
            state,
            &ref_id,
            &Refusal::new(err, "circuit open after repeated upstream failures"),
            &ctx,
            ev,
        );
    }
    match guards::upstream_hop(state, browser, p.record.id.as_str(), &p.record.display_name).await {
        Ok(Some(err)) => {
            audit::record(
                state,
                Some(&ref_id),
                "loop.broken",
                ev.clone().detail(serde_json::json!({"where": "upstream"})),
            );
            return refuse(
                state,
                &ref_id,
                &Refusal::new(err, "redirect loop with the upstream provider"),
                &ctx,
                ev,
            );
        }
        Ok(None) => {}
        Err(e) => tracing::warn!(error = %e, "loop counter unavailable; not counted"),
    }
    let minted = (|| -> Result<(String, String, String, String), crypto::RandomError> {
        Ok((
            crypto::random_token(32)?,
            crypto::random_token(32)?,
            crypto::random_token(48)?,
            crypto::random_token(32)?,
        ))
    })();
    let Ok((state_param, nonce, verifier, fresh_binding)) = minted else {
        return refuse(
            state,
            &ref_id,
            &Refusal::internal("randomness unavailable"),
            &ctx,
            ev,
        );
    };
    // Reuse the browser's flow cookie if it has one, so parallel tabs do not clobber each other.
    let binding = match cookies::read(headers, cookies::FLOW, state.settings.secure_cookies) {
        CookieValue::One(v) if (32..=128).contains(&v.len()) => v,
        _ => fresh_binding,
    };
    let now = state.now();
    let redirect_uri = state.settings.url(&format!("/callback/{}", p.record.id));
    let hop = UpstreamHop {
        ref_id: ref_id.clone(),
        auth_request: req.map(|r| r.id.clone()),
        tenant: p.tenant().clone(),
        provider: p.record.id.clone(),
        nonce: nonce.clone(),
        pkce_verifier: verifier.clone(),
        redirect_uri: redirect_uri.clone(),
        binding_hash: sha256_hex(&binding),
        launch,
        created_at: now,
        expires_at: now + state.settings.flow_ttl,
    };
    let begin = BeginLogin {
        state: state_param.clone(),
        nonce,
        pkce_challenge: crypto::pkce_s256(&verifier),
        redirect_uri,
        prompt: prompt.clone(),
        login_hint,
    };
    let url = match redirect.begin(&begin).await {
        Ok(u) => u,
        Err(e) => {
            if guards::is_upstream_fault(&e.error) {
                guards::upstream_failed(state, p.record.id.as_str(), e.error.code()).await;
            }
            return refuse(state, &ref_id, &Refusal::new(e.error, e.detail), &ctx, ev);
        }
    };
    if let Err(e) = flows(state).put_hop(&state_param, &hop).await {
        return refuse(state, &ref_id, &store_err(e), &ctx, ev);
    }
    audit::record(
        state,
        Some(&ref_id),
        "upstream.redirect",
        ev.detail(serde_json::json!({ "prompt": prompt })),
    );
    let mut resp = respond::redirect(StatusCode::SEE_OTHER, url.as_str());
    let cookie = cookies::set(
        cookies::FLOW,
        &binding,
        state.settings.secure_cookies,
        Some(state.settings.flow_ttl),
    );
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    if let Ok(v) = HeaderValue::from_str(ref_id.as_str()) {
        resp.headers_mut().insert(respond::REF_HEADER, v);
    }
    resp
}

/// Step 4: the upstream's return.
async fn callback(
    State(state): State<AppState>,
    Path(provider): Path<String>,
    headers: HeaderMap,
    Query(cb): Query<Callback>,
    Query(extra): Query<LaunchQuery>,
) -> Response {
    let mut ctx = PageCtx::from_headers(&headers);
    let pid = ProviderId::new(provider);
    // A portal tile (Clever Instant Login, ClassLink LaunchPad, GG4L Passport) delivers a
    // code without our state. It is never redeemed: the login restarts with our own state;
    // the student, signed in at the portal, sees no prompt.
    if cb.state.as_deref().is_none_or(str::is_empty)
        && cb.code.is_some()
        && let Some(reg) = state.providers.get(&pid).filter(is_portal)
    {
        let ref_id = RefId::generate();
        let ev = Ev {
            tenant: Some(reg.tenant().clone()),
            provider: Some(pid.clone()),
            ..Default::default()
        };
        audit::record(
            &state,
            Some(&ref_id),
            "launch.restarted",
            ev.detail(serde_json::json!({"why": "portal code without state is never redeemed"})),
        );
        let mut to = format!("/launch/{}", enc(pid.as_str()));
        if let Some(app) = extra.app.as_deref().filter(|a| !a.is_empty()) {
            to.push_str(&format!("?app={}", enc(app)));
        }
        return respond::redirect(StatusCode::SEE_OTHER, &to);
    }
    let ev = Ev {
        provider: Some(pid.clone()),
        ..Default::default()
    };
    let Some(state_param) = cb.state.clone().filter(|s| !s.is_empty() && s.len() <= 256) else {
        let r = Refusal::new(
            LoginError::StateInvalid,
            if cb.code.is_some() {
                "callback with a code but no state (portal launch or forged)"
            } else {
                "callback without state"
            },
        );
        return refuse(&state, &RefId::generate(), &r, &ctx, ev);
    };
    let f = flows(&state);
    let hop = match f.peek_hop(&state_param).await {
        Ok(Some(h)) => h,
        Ok(None) => {
            let used = f.hop_was_used(&state_param).await.unwrap_or(false);
            let r = if used {
                Refusal::new(LoginError::StateUsed, "state already consumed")
            } else {
                Refusal::new(LoginError::StateInvalid, "state unknown or expired")
            };
            return refuse(&state, &RefId::generate(), &r, &ctx, ev);
        }
        Err(e) => return refuse(&state, &RefId::generate(), &store_err(e), &ctx, ev),
    };
    let ref_id = hop.ref_id.clone();
    let ev = Ev {
        tenant: Some(hop.tenant.clone()),
        provider: Some(hop.provider.clone()),
        ..Default::default()
    };
    let Some(reg) = state.providers.get(&hop.provider) else {
        let r = Refusal::new(
            LoginError::ProviderUnknown {
                provider: hop.provider.to_string(),
            },
            "provider removed mid-flow",
        );
        return refuse(&state, &ref_id, &r, &ctx, ev);
    };
    ctx = ctx.provider(reg.record.display_name.clone());
    let req = match &hop.auth_request {
        Some(id) => f.get_auth_request(id).await.ok().flatten(),
        None => None,
    };
    if let Some(r) = &req {
        ctx = ctx
            .app(r.client_id.as_str())
            .retry(format!("/login?req={}", r.id), "Try again");
    }
    let ev = Ev {
        client: req.as_ref().map(|r| r.client_id.clone()),
        ..ev
    };
    if hop.provider != pid {
        let r = Refusal::new(
            LoginError::IssuerMismatch,
            format!(
                "callback for {pid} carried the state of a flow started at {}",
                hop.provider
            ),
        );
        return refuse(&state, &ref_id, &r, &ctx, ev);
    }
    match cookies::read(&headers, cookies::FLOW, state.settings.secure_cookies) {
        CookieValue::Absent => {
            let r = Refusal::new(
                LoginError::CookiesBlocked,
                "the callback arrived without the flow cookie",
            );
            return refuse(&state, &ref_id, &r, &ctx, ev);
        }
        CookieValue::Ambiguous => {
            let r = Refusal::new(LoginError::FlowNotThisBrowser, "more than one flow cookie");
            return refuse(&state, &ref_id, &r, &ctx, ev);
        }
        CookieValue::One(v) => {
            if !crypto::ct_eq(sha256_hex(&v).as_bytes(), hop.binding_hash.as_bytes()) {
                let r = Refusal::new(
                    LoginError::FlowNotThisBrowser,
                    "flow cookie does not match the state's browser",
                );
                return refuse(&state, &ref_id, &r, &ctx, ev);
            }
        }
    }
    let hop = match f.take_hop(&state_param).await {
        Ok(Some(h)) => h,
        Ok(None) => {
            return refuse(
                &state,
                &ref_id,
                &Refusal::new(LoginError::StateUsed, "state consumed concurrently"),
                &ctx,
                ev,
            );
        }
        Err(e) => return refuse(&state, &ref_id, &store_err(e), &ctx, ev),
    };
    if hop.expires_at <= state.now() {
        return refuse(
            &state,
            &ref_id,
            &Refusal::new(LoginError::FlowExpired, "upstream hop expired"),
            &ctx,
            ev,
        );
    }
    let Some(redirect) = reg.provider.as_redirect() else {
        return refuse(
            &state,
            &ref_id,
            &Refusal::internal("provider lost its redirect capability"),
            &ctx,
            ev,
        );
    };
    let flow = UpstreamFlow {
        nonce: hop.nonce.clone(),
        pkce_verifier: hop.pkce_verifier.clone(),
        redirect_uri: hop.redirect_uri.clone(),
    };
    let identity = match redirect.finish(&cb, &flow).await {
        Ok(i) => i,
        Err(e) => {
            if guards::is_upstream_fault(&e.error) {
                guards::upstream_failed(&state, reg.record.id.as_str(), e.error.code()).await;
            }
            if e.error.offers_other_account() {
                let href = match &req {
                    Some(r) => format!(
                        "/login/start?req={}&provider={}&prompt=select_account",
                        enc(&r.id),
                        enc(reg.record.id.as_str())
                    ),
                    None => format!(
                        "/login/start?provider={}&prompt=select_account",
                        enc(reg.record.id.as_str())
                    ),
                };
                ctx = ctx.retry(href, "Use a different account");
            }
            return refuse(&state, &ref_id, &Refusal::new(e.error, e.detail), &ctx, ev);
        }
    };
    audit::record(
        &state,
        Some(&ref_id),
        "upstream.callback",
        Ev { ..ev.clone() }.detail(serde_json::json!({
            "subject": identity.subject,
            "email": identity.email,
            "email_verified": identity.email_verified,
            "upstream_tenant": identity.upstream_tenant,
            "claims": redact_claims(identity.claims.clone()),
        })),
    );
    let account = match decide(&state, &reg, &identity, &ref_id).await {
        Ok(a) => a,
        Err(r) => return refuse(&state, &ref_id, &r, &ctx, ev),
    };
    issue(
        &state,
        &headers,
        &ref_id,
        &account,
        &reg,
        &identity,
        req.as_ref(),
        hop.launch.as_ref(),
        &ctx,
    )
    .await
}

fn is_portal(r: &Registered) -> bool {
    matches!(
        r.provider.kind(),
        homeroom_providers::ProviderKind::Clever
            | homeroom_providers::ProviderKind::ClassLink
            | homeroom_providers::ProviderKind::Gg4l
    )
}

#[derive(Deserialize, Default)]
struct LaunchQuery {
    app: Option<String>,
    target_link_uri: Option<String>,
}

/// `/launch/{provider}?app=ALIAS[&target_link_uri=URL]`: a tile launch. Starts a fresh,
/// normal login at the provider with our own state and nonce (replacing whatever session
/// the shared Chromebook had), then continues to the app. The app must be registered in
/// the provider's tenant and the target allowlisted for it: never an open redirect.
async fn launch(
    State(state): State<AppState>,
    axum::Extension(ClientIp(ip)): axum::Extension<ClientIp>,
    Path(provider): Path<String>,
    headers: HeaderMap,
    Query(q): Query<LaunchQuery>,
) -> Response {
    let ctx = PageCtx::from_headers(&headers);
    let ref_id = RefId::generate();
    let pid = ProviderId::new(provider);
    let ev = Ev {
        provider: Some(pid.clone()),
        ..Default::default()
    };
    let Some(reg) = state.providers.get(&pid).filter(|r| r.record.enabled) else {
        let r = Refusal::new(
            LoginError::ProviderUnknown {
                provider: pid.to_string(),
            },
            "launch for an unknown or disabled provider",
        );
        return refuse(&state, &ref_id, &r, &ctx, ev);
    };
    let launch = match &q.app {
        None => None,
        Some(alias) => {
            let app = state
                .directory
                .get_app(&homeroom_core::ClientId::new(alias.clone()))
                .await
                .ok()
                .flatten();
            let Some(app) = app.filter(|a| a.enabled && &a.tenant == reg.tenant()) else {
                let r = Refusal::new(
                    LoginError::TargetNotAllowed,
                    format!(
                        "launch names app {:?}, not an enabled app of the tenant",
                        alias.chars().take(100).collect::<String>()
                    ),
                );
                return refuse(&state, &ref_id, &r, &ctx, ev);
            };
            if let Some(t) = &q.target_link_uri
                && !target_allowed(&app, t)
            {
                let r = Refusal::new(
                    LoginError::TargetNotAllowed,
                    "target_link_uri is not allowlisted for the app",
                );
                return refuse(&state, &ref_id, &r, &ctx.app(app.name.clone()), ev);
            }
            Some(Launch {
                app: app.client_id.clone(),
                target: q.target_link_uri.clone(),
            })
        }
    };
    let (browser, _) = guards::browser_key(&state, &headers, ip);
    audit::record(
        &state,
        Some(&ref_id),
        "launch.start",
        Ev {
            tenant: Some(reg.tenant().clone()),
            client: launch.as_ref().map(|l| l.app.clone()),
            ..ev
        },
    );
    start_upstream_for(&state, &headers, &browser, None, &reg, None, None, launch).await
}

/// A launch target must be the app's start URL or lie under one of its allowed origins.
fn target_allowed(app: &homeroom_directory::AppRecord, target: &str) -> bool {
    if app.start_url.as_deref() == Some(target) {
        return true;
    }
    let Ok(t) = url::Url::parse(target) else {
        return false;
    };
    if !matches!(t.scheme(), "https" | "http") || t.username() != "" || t.password().is_some() {
        return false;
    }
    let origin = t.origin().ascii_serialization();
    app.allowed_origins.iter().any(|o| o == &origin)
}

/// After a launch, the app: its `initiate_login_uri` (OIDC third-party-initiated login:
/// `iss`, `login_hint`, `target_link_uri`), else its start URL, else a signed-in page.
async fn continue_to_app(state: &AppState, launch: &Launch, account: &Account) -> Response {
    let app = state.directory.get_app(&launch.app).await.ok().flatten();
    let Some(app) = app else {
        return crate::pages::message(
            StatusCode::OK,
            "You're signed in",
            "You are signed in. Open the app again from your portal.",
            None,
        );
    };
    let hint = account
        .email
        .clone()
        .or_else(|| account.username.clone())
        .unwrap_or_else(|| account.id.to_string());
    if let Some(init) = &app.initiate_login_uri {
        let mut params = vec![
            ("iss", state.settings.issuer.as_str()),
            ("login_hint", hint.as_str()),
        ];
        let target = launch.target.clone().or_else(|| app.start_url.clone());
        if let Some(t) = target.as_deref() {
            params.push(("target_link_uri", t));
        }
        return respond::redirect(StatusCode::SEE_OTHER, &respond::with_query(init, &params));
    }
    if let Some(start) = launch.target.as_ref().or(app.start_url.as_ref()) {
        return respond::redirect(StatusCode::SEE_OTHER, start);
    }
    crate::pages::message(
        StatusCode::OK,
        "You're signed in",
        &format!("You are signed in. Open {} from your portal.", app.name),
        None,
    )
}

/// Step 5: which account is this, and may it sign in?
pub async fn decide(
    state: &AppState,
    reg: &Registered,
    identity: &UpstreamIdentity,
    ref_id: &RefId,
) -> Result<Account, Refusal> {
    let dir = &state.directory;
    let tenant_id = reg.tenant().clone();
    if identity.subject.trim().is_empty() {
        return Err(Refusal::new(LoginError::SubjectInvalid, "empty subject"));
    }
    let ev = |account: Option<AccountId>, d: serde_json::Value| Ev {
        tenant: Some(tenant_id.clone()),
        provider: Some(reg.record.id.clone()),
        account,
        detail: d,
        ..Default::default()
    };
    let account = if state.settings.roster_required.contains(&tenant_id) {
        let a = crate::policy::rostered_account(state, reg, identity).await?;
        audit::record(
            state,
            Some(ref_id),
            "decide.rostered",
            ev(
                Some(a.id.clone()),
                serde_json::json!({"why": "roster required: matched an active roster record"}),
            ),
        );
        a
    } else {
        match dir
            .find_account_by_link(&reg.record.id, &identity.subject)
            .await
            .map_err(dir_err)?
        {
            Some(a) => {
                audit::record(
                    state,
                    Some(ref_id),
                    "decide.linked",
                    ev(
                        Some(a.id.clone()),
                        serde_json::json!({"why": "provider link matches (provider, subject)"}),
                    ),
                );
                a
            }
            None => {
                let email = identity.email.as_deref().map(normalise_email);
                let existing = match &email {
                    Some(e) => dir
                        .find_accounts_by_email(&tenant_id, e)
                        .await
                        .map_err(dir_err)?,
                    None => Vec::new(),
                };
                let tenant = state.tenant(&tenant_id).await.map_err(dir_err)?;
                let domain_trusted = email
                    .as_deref()
                    .and_then(|e| e.rsplit_once('@'))
                    .is_some_and(|(_, d)| {
                        tenant
                            .as_ref()
                            .is_some_and(|t| t.domains.iter().any(|td| td.eq_ignore_ascii_case(d)))
                    });
                if let (Some(e), false) = (&email, existing.is_empty()) {
                    if !(identity.email_verified && domain_trusted && existing.len() == 1) {
                        return Err(Refusal::new(
                            LoginError::LinkRequiresVerifiedEmail { email: e.clone() },
                            format!(
                                "email matches {} existing account(s); provider verified={}, domain of tenant={}",
                                existing.len(),
                                identity.email_verified,
                                domain_trusted
                            ),
                        ));
                    }
                    let a = existing
                        .into_iter()
                        .next()
                        .ok_or_else(|| Refusal::internal("account vanished"))?;
                    let link = ProviderLink {
                        account: a.id.clone(),
                        provider: reg.record.id.clone(),
                        subject: identity.subject.clone(),
                        email: email.clone(),
                        created_at: state.now(),
                    };
                    dir.add_link(&link).await.map_err(dir_err)?;
                    audit::record(
                        state,
                        Some(ref_id),
                        "decide.linked_by_verified_email",
                        ev(
                            Some(a.id.clone()),
                            serde_json::json!({"why": "verified email of a tenant domain matched one account", "email": e}),
                        ),
                    );
                    a
                } else {
                    let a = Account {
                        id: AccountId::generate(),
                        tenant: tenant_id.clone(),
                        status: AccountStatus::Active,
                        email: email.clone(),
                        email_verified: identity.email_verified && domain_trusted,
                        name: identity.name.clone(),
                        given_name: identity.given_name.clone(),
                        family_name: identity.family_name.clone(),
                        username: identity.preferred_username.clone(),
                        roles: identity.roles.clone(),
                        created_at: state.now(),
                        last_sign_in_at: None,
                        sign_in_count: 0,
                    };
                    let link = ProviderLink {
                        account: a.id.clone(),
                        provider: reg.record.id.clone(),
                        subject: identity.subject.clone(),
                        email,
                        created_at: state.now(),
                    };
                    dir.create_account(&a, Some(&link)).await.map_err(dir_err)?;
                    audit::record(
                        state,
                        Some(ref_id),
                        "decide.account_created",
                        ev(
                            Some(a.id.clone()),
                            serde_json::json!({"why": "first sign-in of this (provider, subject)"}),
                        ),
                    );
                    a
                }
            }
        }
    };
    match account.status {
        AccountStatus::Active => Ok(account),
        AccountStatus::Archived => Err(Refusal::new(
            LoginError::AccountArchived,
            format!("account {} is archived", account.id),
        )),
        AccountStatus::Suspended => Err(Refusal::new(
            LoginError::AccountSuspended,
            format!("account {} is suspended", account.id),
        )),
    }
}

/// Lower-cases and trims an email for comparison.
pub fn normalise_email(e: &str) -> String {
    e.trim().to_ascii_lowercase()
}

/// Step 6: a fresh SSO session (the old one, if any, ends: rotation at login), then the
/// code to the app, or a "signed in" page when no app asked.
#[allow(clippy::too_many_arguments)]
async fn issue(
    state: &AppState,
    headers: &HeaderMap,
    ref_id: &RefId,
    account: &Account,
    reg: &Registered,
    identity: &UpstreamIdentity,
    req: Option<&AuthRequest>,
    launch: Option<&Launch>,
    ctx: &PageCtx,
) -> Response {
    issue_for(
        state,
        headers,
        ref_id,
        account,
        Some(&reg.record.id),
        &identity.label(),
        req,
        launch,
        ctx,
    )
    .await
}

/// Step 6 for any way of signing in (an upstream provider, or `provider: None` for a
/// Homeroom password): a fresh SSO session, then the code to the app (or the launch, or a
/// "signed in" page). `label` is what the session shows as the signed-in identity.
#[allow(clippy::too_many_arguments)]
pub async fn issue_for(
    state: &AppState,
    headers: &HeaderMap,
    ref_id: &RefId,
    account: &Account,
    provider: Option<&ProviderId>,
    label: &str,
    req: Option<&AuthRequest>,
    launch: Option<&Launch>,
    ctx: &PageCtx,
) -> Response {
    let ev = Ev {
        tenant: Some(account.tenant.clone()),
        provider: provider.cloned(),
        account: Some(account.id.clone()),
        client: req.map(|r| r.client_id.clone()),
        ..Default::default()
    };
    let f = flows(state);
    if let CookieValue::One(old) =
        cookies::read(headers, cookies::SESSION, state.settings.secure_cookies)
        && let Err(e) = f.end_session(&sha256_hex(&old)).await
    {
        return refuse(state, ref_id, &store_err(e), ctx, ev);
    }
    let tenant = state.tenant(&account.tenant).await.ok().flatten();
    let now = state.now();
    let session = SsoSession {
        tenant: account.tenant.clone(),
        account: account.id.clone(),
        provider: provider.cloned(),
        upstream_label: label.to_owned(),
        auth_time: now,
        created_at: now,
        last_seen: now,
        idle_secs: tenant.as_ref().map(|t| t.session_idle_secs).unwrap_or(1800),
        absolute_secs: tenant
            .as_ref()
            .map(|t| t.session_absolute_secs)
            .unwrap_or(43_200),
        ref_id: ref_id.clone(),
    };
    let raw = match f.create_session(&session).await {
        Ok(r) => r,
        Err(e) => return refuse(state, ref_id, &store_err(e), ctx, ev),
    };
    audit::record(state, Some(ref_id), "login.success", ev);
    let hash = sha256_hex(&raw);
    // The sign-in record, the way on and the status token are independent: one wait, not
    // three (the session they hang off exists already).
    let onward = async {
        match (req, launch) {
            (Some(r), _) => issue_code(state, r, &hash, &session).await,
            (None, Some(l)) => continue_to_app(state, l, account).await,
            // An admin sent here by the console goes back to the console page they asked for.
            (None, None) => {
                match crate::console::return_target(headers, state.settings.secure_cookies) {
                    Some(to) => {
                        let mut r = respond::redirect(StatusCode::SEE_OTHER, &to);
                        if let Ok(v) = HeaderValue::from_str(&cookies::clear(
                            cookies::CONSOLE_RETURN,
                            state.settings.secure_cookies,
                        )) {
                            r.headers_mut().append(header::SET_COOKIE, v);
                        }
                        r
                    }
                    None => crate::pages::message(
                        StatusCode::OK,
                        "You're signed in",
                        &format!(
                            "You are signed in to Homeroom as {label}. You can now open your apps."
                        ),
                        None,
                    ),
                }
            }
        }
    };
    let (recorded, mut resp, status) = tokio::join!(
        state.directory.record_sign_in(&account.id, now),
        onward,
        f.status_token(&hash, &session)
    );
    if let Err(e) = recorded {
        tracing::warn!(ref_id = %ref_id, error = %e, "could not record sign-in");
    }
    let secure = state.settings.secure_cookies;
    let status = match status {
        Ok(t) => cookies::set_status(&t, secure),
        Err(e) => {
            tracing::warn!(ref_id = %ref_id, error = %e, "no session-status token");
            cookies::clear(cookies::STATUS, secure)
        }
    };
    for c in [
        cookies::set(cookies::SESSION, &raw, secure, None),
        cookies::clear(cookies::FLOW, secure),
        status,
    ] {
        if let Ok(v) = HeaderValue::from_str(&c) {
            resp.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    resp
}

/// Mints the authorization code for a satisfied request and redirects to the app.
pub async fn issue_code(
    state: &AppState,
    req: &AuthRequest,
    session_hash: &str,
    session: &SsoSession,
) -> Response {
    let ctx = PageCtx::default().app(req.client_id.as_str());
    let ev = Ev {
        tenant: Some(req.tenant.clone()),
        client: Some(req.client_id.clone()),
        account: Some(session.account.clone()),
        ..Default::default()
    };
    // App assignment (roles, schools, grades) is checked for every code, fresh sign-in or
    // SSO session alike.
    if !state.settings.assignments.is_empty() {
        let account = state
            .directory
            .get_account(&session.account)
            .await
            .ok()
            .flatten();
        let verdict = match &account {
            Some(a) => crate::policy::assignment(state, &req.client_id, a).await,
            None => Err(Refusal::new(
                LoginError::SessionExpired,
                "the session's account no longer exists",
            )),
        };
        if let Err(r) = verdict {
            return refuse(state, &req.ref_id, &r, &ctx, ev);
        }
    }
    // Guardians: 18+ attestation, policies, and the chosen family (crate::family).
    let guardian_family = match crate::family::gate(state, req, session_hash, session).await {
        crate::family::Gate::Go(f) => f,
        crate::family::Gate::Stop(page) => return page,
    };
    let family = match crypto::random_token(16) {
        Ok(f) => f,
        Err(e) => return refuse(state, &req.ref_id, &Refusal::internal(e), &ctx, ev),
    };
    let code = AuthCode {
        client_id: req.client_id.clone(),
        tenant: req.tenant.clone(),
        redirect_uri: req.redirect_uri.clone(),
        scope: req.scope.clone(),
        nonce: req.nonce.clone(),
        code_challenge: req.code_challenge.clone(),
        account: session.account.clone(),
        session_hash: session_hash.to_owned(),
        auth_time: session.auth_time,
        ref_id: req.ref_id.clone(),
        family,
        guardian_family,
        expires_at: state.now() + state.settings.code_ttl,
    };
    let f = flows(state);
    let raw = match f.put_code(&code).await {
        Ok(r) => r,
        Err(e) => return refuse(state, &req.ref_id, &store_err(e), &ctx, ev),
    };
    let _ = f.delete_auth_request(&req.id).await;
    audit::record(state, Some(&req.ref_id), "code.issued", ev);
    let mut params = vec![("code", raw.as_str())];
    if let Some(s) = req.state.as_deref() {
        params.push(("state", s));
    }
    params.push(("iss", state.settings.issuer.as_str()));
    let mut resp = respond::redirect(
        StatusCode::FOUND,
        &respond::with_query(&req.redirect_uri, &params),
    );
    if let Ok(v) = HeaderValue::from_str(req.ref_id.as_str()) {
        resp.headers_mut().insert(respond::REF_HEADER, v);
    }
    resp.into_response()
}
