//! SAML 2.0 service-provider endpoints and the pipeline's SAML hop. The protocol checks
//! live in the provider's [`SamlLogin`](homeroom_providers::SamlLogin) adapter; this module
//! owns what is state: the hop, the request-id index, the replay cache and the browser
//! binding.
//!
//! - `GET /saml/{provider}/metadata`: our SP metadata (entity ID = this URL by default).
//! - SP-initiated start: [`start`], called from `pipeline::start_upstream_for` for every
//!   provider with a SAML capability (login buttons, `idp` hints, `/launch/{provider}`). It
//!   mints the hop key (sent as RelayState) and the AuthnRequest `ID` (256 random bits),
//!   stores the hop bound to this browser's flow cookie and an index `samlreq:{ID}` → hop
//!   key, and redirects with the Redirect binding.
//! - `POST /saml/{provider}/acs`: the IdP's POST. The response is pre-screened, its
//!   `InResponseTo` names the hop (the RelayState must agree when present), the adapter
//!   verifies everything against that request id, then the assertion id is spent in the
//!   replay cache (`saml:seen:{issuer}:{id}`, kept until the assertion could no longer be
//!   replayed) and the hop is consumed. An unsolicited response (no `InResponseTo`) is
//!   accepted only when the provider allows IdP-initiated login, and its RelayState only as
//!   an allowlisted app alias of the tenant, never a URL. Because the IdP posts cross-site,
//!   the browser's `SameSite=Lax` cookies are not sent with that POST: the verified result
//!   is parked under a single-use token and the browser is sent (303, a top-level GET that
//!   carries Lax cookies) to
//! - `GET /saml/{provider}/acs?continue=TOKEN`: checks the browser binding (the flow
//!   cookie of the hop; for IdP-initiated logins a cookie set on the 303), then runs the
//!   pipeline's `decide` and `issue` like the OIDC callback, continuing to the app of a
//!   launch when there is one.

use crate::AppState;
use crate::audit::{self, Ev};
use crate::cookies::{self, CookieValue};
use crate::flows::{AuthRequest, Launch, UpstreamHop, flows};
use crate::guards;
use crate::pipeline::{self, Refusal, refuse};
use crate::registry::Registered;
use crate::respond::{self, PageCtx};
use axum::Router;
use axum::extract::{Form, Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use homeroom_core::crypto::{self, sha256_hex};
use homeroom_core::identity::redact_claims;
use homeroom_core::{ClientId, LoginError, ProviderId, RefId, UpstreamIdentity};
use homeroom_providers::{SamlBegin, SamlLogin, SpEndpoints};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde::{Deserialize, Serialize};

/// Cookie binding an IdP-initiated login's continuation to the browser that posted it.
pub const SAML_COOKIE: &str = "hr_saml";
/// How long a verified response waits for the browser's continuation request.
const PENDING_TTL: u64 = 120;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/saml/{provider}/metadata", get(metadata))
        .route(
            "/saml/{provider}/acs",
            axum::routing::post(acs).get(acs_continue),
        )
}

/// Our SP endpoints for a provider, from the public URL.
pub fn sp_endpoints(state: &AppState, provider: &ProviderId) -> SpEndpoints {
    SpEndpoints {
        entity_id: state
            .settings
            .url(&format!("/saml/{}/metadata", enc(provider.as_str()))),
        acs_url: state
            .settings
            .url(&format!("/saml/{}/acs", enc(provider.as_str()))),
    }
}

/// An app alias: 1-128 characters of `[A-Za-z0-9._-]` (never a URL).
pub fn is_alias(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn store_err(e: homeroom_session::StoreError) -> Refusal {
    Refusal::new(LoginError::Internal, format!("session store: {e}"))
}

fn saml_of(reg: &Registered) -> Option<&dyn SamlLogin> {
    reg.provider.as_saml()
}

async fn metadata(State(state): State<AppState>, Path(provider): Path<String>) -> Response {
    let pid = ProviderId::new(provider);
    let Some(reg) = state.providers.get(&pid) else {
        return (StatusCode::NOT_FOUND, "no such SAML provider").into_response();
    };
    let Some(saml) = saml_of(&reg) else {
        return (StatusCode::NOT_FOUND, "no such SAML provider").into_response();
    };
    match saml.sp_metadata(&sp_endpoints(&state, &pid)).await {
        Ok(xml) => {
            let mut r = xml.into_response();
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/samlmetadata+xml"),
            );
            r.headers_mut().insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=3600"),
            );
            r
        }
        Err(e) => {
            tracing::error!(provider = %pid, detail = %e.detail, "SP metadata");
            (StatusCode::INTERNAL_SERVER_ERROR, "metadata unavailable").into_response()
        }
    }
}

/// The pipeline's SAML branch of step 3: mint the hop, bind it to this browser, redirect
/// to the IdP with an AuthnRequest.
#[allow(clippy::too_many_arguments)]
pub async fn start(
    state: &AppState,
    headers: &HeaderMap,
    browser: &str,
    req: Option<&AuthRequest>,
    p: &Registered,
    prompt: Option<String>,
    launch: Option<Launch>,
    ref_id: RefId,
) -> Response {
    let ctx = PageCtx::from_headers(headers).provider(p.record.display_name.clone());
    let ev = Ev {
        tenant: Some(p.tenant().clone()),
        provider: Some(p.record.id.clone()),
        client: req.map(|r| r.client_id.clone()),
        ..Default::default()
    };
    let Some(saml) = saml_of(p) else {
        let r = Refusal::new(
            LoginError::ProviderDisabled {
                provider: p.record.display_name.clone(),
            },
            "provider has no SAML login",
        );
        return refuse(state, &ref_id, &r, &ctx, ev);
    };
    if let Some(err) =
        guards::circuit_open(state, p.record.id.as_str(), &p.record.display_name).await
    {
        let r = Refusal::new(err, "circuit open after repeated upstream failures");
        return refuse(state, &ref_id, &r, &ctx, ev);
    }
    match guards::upstream_hop(state, browser, p.record.id.as_str(), &p.record.display_name).await {
        Ok(Some(err)) => {
            let r = Refusal::new(err, "redirect loop with the upstream provider");
            return refuse(state, &ref_id, &r, &ctx, ev);
        }
        Ok(None) => {}
        Err(e) => tracing::warn!(error = %e, "loop counter unavailable; not counted"),
    }
    let minted = (|| -> Result<(String, String, String), crypto::RandomError> {
        Ok((
            crypto::random_token(32)?,
            format!("_{}", crypto::random_token(32)?),
            crypto::random_token(32)?,
        ))
    })();
    let Ok((hop_key, request_id, fresh_binding)) = minted else {
        let r = Refusal::new(LoginError::Internal, "randomness unavailable");
        return refuse(state, &ref_id, &r, &ctx, ev);
    };
    let binding = match cookies::read(headers, cookies::FLOW, state.settings.secure_cookies) {
        CookieValue::One(v) if (32..=128).contains(&v.len()) => v,
        _ => fresh_binding,
    };
    let sp = sp_endpoints(state, &p.record.id);
    let now = state.now();
    let hop = UpstreamHop {
        ref_id: ref_id.clone(),
        auth_request: req.map(|r| r.id.clone()),
        tenant: p.tenant().clone(),
        provider: p.record.id.clone(),
        // For a SAML hop the "nonce" is the AuthnRequest ID the response must answer.
        nonce: request_id.clone(),
        pkce_verifier: String::new(),
        redirect_uri: sp.acs_url.clone(),
        binding_hash: sha256_hex(&binding),
        launch,
        created_at: now,
        expires_at: now + state.settings.flow_ttl,
    };
    let begin = SamlBegin {
        request_id: request_id.clone(),
        relay_state: hop_key.clone(),
        sp,
        force_authn: matches!(prompt.as_deref(), Some("login" | "select_account")),
    };
    let url = match saml.begin(&begin).await {
        Ok(u) => u,
        Err(e) => {
            if guards::is_upstream_fault(&e.error) {
                guards::upstream_failed(state, p.record.id.as_str(), e.error.code()).await;
            }
            return refuse(state, &ref_id, &Refusal::new(e.error, e.detail), &ctx, ev);
        }
    };
    let ttl = u64::try_from(state.settings.flow_ttl.max(1)).unwrap_or(600);
    let f = flows(state);
    if let Err(e) = f.put_hop(&hop_key, &hop).await {
        return refuse(state, &ref_id, &store_err(e), &ctx, ev);
    }
    if let Err(e) = state
        .sessions
        .put_json(&format!("samlreq:{request_id}"), &hop_key, ttl)
        .await
    {
        return refuse(state, &ref_id, &store_err(e), &ctx, ev);
    }
    audit::record(
        state,
        Some(&ref_id),
        "upstream.redirect",
        ev.detail(serde_json::json!({ "prompt": prompt, "protocol": "saml" })),
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

#[derive(Deserialize)]
struct AcsForm {
    #[serde(rename = "SAMLResponse")]
    saml_response: Option<String>,
    #[serde(rename = "RelayState")]
    relay_state: Option<String>,
}

/// A verified response waiting for the browser's continuation.
#[derive(Serialize, Deserialize)]
struct Pending {
    provider: ProviderId,
    ref_id: RefId,
    auth_request: Option<String>,
    launch: Option<Launch>,
    /// SHA-256 of the binding cookie value (flow cookie, or `hr_saml` when unsolicited).
    binding_hash: String,
    unsolicited: bool,
    identity: UpstreamIdentity,
}

/// Spends the assertion id; `SamlReplay` when it was seen before.
async fn spend(state: &AppState, a: &homeroom_providers::SamlAssertion) -> Result<(), Refusal> {
    let ttl = u64::try_from((a.not_on_or_after - state.now()).max(60)).unwrap_or(600);
    let key = format!("saml:seen:{}:{}", a.issuer, a.assertion_id);
    match state.sessions.put_json_if_absent(&key, &true, ttl).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(Refusal::new(
            LoginError::SamlReplay,
            format!("assertion {} was already consumed", a.assertion_id),
        )),
        Err(e) => Err(store_err(e)),
    }
}

/// `POST /saml/{provider}/acs`.
async fn acs(
    State(state): State<AppState>,
    Path(provider): Path<String>,
    headers: HeaderMap,
    Form(form): Form<AcsForm>,
) -> Response {
    let mut ctx = PageCtx::from_headers(&headers);
    let pid = ProviderId::new(provider);
    let mut ev = Ev {
        provider: Some(pid.clone()),
        ..Default::default()
    };
    let fallback_ref = RefId::generate();
    let Some(reg) = state.providers.get(&pid).filter(|r| r.record.enabled) else {
        let r = Refusal::new(
            LoginError::ProviderUnknown {
                provider: pid.to_string(),
            },
            "SAML response for an unknown or disabled provider",
        );
        return refuse(&state, &fallback_ref, &r, &ctx, ev);
    };
    ev.tenant = Some(reg.tenant().clone());
    ctx = ctx.provider(reg.record.display_name.clone());
    let Some(saml) = saml_of(&reg) else {
        let r = Refusal::new(
            LoginError::ProviderUnknown {
                provider: pid.to_string(),
            },
            "provider is not a SAML provider",
        );
        return refuse(&state, &fallback_ref, &r, &ctx, ev);
    };
    let raw = form.saml_response.unwrap_or_default();
    if raw.trim().is_empty() {
        let r = Refusal::new(
            LoginError::SamlMessageInvalid {
                reason: "no SAMLResponse".into(),
            },
            "POST without SAMLResponse",
        );
        return refuse(&state, &fallback_ref, &r, &ctx, ev);
    }
    let relay = form.relay_state.unwrap_or_default();
    let envelope = match saml.inspect(&raw) {
        Ok(e) => e,
        Err(e) => {
            return refuse(
                &state,
                &fallback_ref,
                &Refusal::new(e.error, e.detail),
                &ctx,
                ev,
            );
        }
    };
    let sp = sp_endpoints(&state, &pid);
    let result = match envelope.in_response_to.as_deref() {
        Some(irt) => solicited(&state, &reg, saml, &raw, irt, &relay, &sp).await,
        None => unsolicited(&state, &reg, saml, &raw, &relay, &sp).await,
    };
    let (pending, binding) = match result {
        Ok(p) => p,
        Err((ref_id, r)) => {
            let ref_id = ref_id.unwrap_or(fallback_ref);
            if guards::is_upstream_fault(&r.error) {
                guards::upstream_failed(&state, pid.as_str(), r.error.code()).await;
            }
            return refuse(&state, &ref_id, &r, &ctx, ev);
        }
    };
    let ref_id = pending.ref_id.clone();
    let Ok(token) = crypto::random_token(32) else {
        let r = Refusal::new(LoginError::Internal, "randomness unavailable");
        return refuse(&state, &ref_id, &r, &ctx, ev);
    };
    if let Err(e) = state
        .sessions
        .put_json(
            &format!("samlpending:{}", sha256_hex(&token)),
            &pending,
            PENDING_TTL,
        )
        .await
    {
        return refuse(&state, &ref_id, &store_err(e), &ctx, ev);
    }
    audit::record(
        &state,
        Some(&ref_id),
        "upstream.saml_verified",
        ev.detail(serde_json::json!({
            "unsolicited": pending.unsolicited,
            "subject": pending.identity.subject,
        })),
    );
    let mut resp = respond::redirect(
        StatusCode::SEE_OTHER,
        &format!("/saml/{}/acs?continue={}", enc(pid.as_str()), enc(&token)),
    );
    if let Some(b) = binding {
        let c = cookies::set(
            SAML_COOKIE,
            &b,
            state.settings.secure_cookies,
            Some(i64::try_from(PENDING_TTL).unwrap_or(120)),
        );
        if let Ok(v) = HeaderValue::from_str(&c) {
            resp.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    if let Ok(v) = HeaderValue::from_str(ref_id.as_str()) {
        resp.headers_mut().insert(respond::REF_HEADER, v);
    }
    resp
}

type Step = Result<(Pending, Option<String>), (Option<RefId>, Refusal)>;

/// An SP-initiated response: find our request, verify against its id, spend, consume.
async fn solicited(
    state: &AppState,
    reg: &Registered,
    saml: &dyn SamlLogin,
    raw: &str,
    irt: &str,
    relay: &str,
    sp: &SpEndpoints,
) -> Step {
    let bad_irt = |d: &str| Refusal::new(LoginError::SamlInResponseToInvalid, d);
    if irt.len() > 256 {
        return Err((None, bad_irt("InResponseTo too long")));
    }
    let hop_key: Option<String> = state
        .sessions
        .get_json(&format!("samlreq:{irt}"))
        .await
        .map_err(|e| (None, store_err(e)))?;
    let f = flows(state);
    let hop = match &hop_key {
        Some(k) => f.peek_hop(k).await.map_err(|e| (None, store_err(e)))?,
        None => None,
    };
    let (Some(hop_key), Some(hop)) = (hop_key, hop) else {
        // Unknown or already consumed request: verify anyway, so a replayed response is
        // named as a replay and anything else keeps its own code.
        let a = saml
            .finish(raw, Some(irt), sp)
            .await
            .map_err(|e| (None, Refusal::new(e.error, e.detail)))?;
        spend(state, &a).await.map_err(|r| (None, r))?;
        return Err((
            None,
            bad_irt("InResponseTo names no pending request of this Homeroom"),
        ));
    };
    let ref_id = Some(hop.ref_id.clone());
    if !relay.is_empty() && relay != hop_key {
        return Err((
            ref_id,
            bad_irt("RelayState does not belong to the request answered"),
        ));
    }
    if hop.provider != reg.record.id || !crypto::ct_eq(hop.nonce.as_bytes(), irt.as_bytes()) {
        return Err((
            ref_id,
            bad_irt("the request answered was sent for another provider"),
        ));
    }
    if hop.expires_at <= state.now() {
        return Err((
            ref_id,
            Refusal::new(LoginError::FlowExpired, "SAML request expired"),
        ));
    }
    let a = saml
        .finish(raw, Some(irt), sp)
        .await
        .map_err(|e| (ref_id.clone(), Refusal::new(e.error, e.detail)))?;
    spend(state, &a).await.map_err(|r| (ref_id.clone(), r))?;
    let hop = match f.take_hop(&hop_key).await {
        Ok(Some(h)) => h,
        Ok(None) => {
            return Err((
                ref_id,
                Refusal::new(LoginError::SamlReplay, "request consumed concurrently"),
            ));
        }
        Err(e) => return Err((ref_id, store_err(e))),
    };
    Ok((
        Pending {
            provider: reg.record.id.clone(),
            ref_id: hop.ref_id.clone(),
            auth_request: hop.auth_request.clone(),
            launch: hop.launch.clone(),
            binding_hash: hop.binding_hash.clone(),
            unsolicited: false,
            identity: a.identity,
        },
        None,
    ))
}

/// An IdP-initiated response: only when allowed, RelayState only as an app alias.
async fn unsolicited(
    state: &AppState,
    reg: &Registered,
    saml: &dyn SamlLogin,
    raw: &str,
    relay: &str,
    sp: &SpEndpoints,
) -> Step {
    if !saml.allows_idp_initiated() {
        return Err((
            None,
            Refusal::new(
                LoginError::SamlUnsolicitedDisabled {
                    provider: reg.record.display_name.clone(),
                },
                "unsolicited response while IdP-initiated login is off",
            ),
        ));
    }
    let launch = if relay.is_empty() {
        None
    } else {
        let not_allowed = || {
            (
                None,
                Refusal::new(
                    LoginError::SamlRelayStateNotAllowed,
                    format!(
                        "RelayState {:?} is not an allowlisted app alias",
                        relay.chars().take(100).collect::<String>()
                    ),
                ),
            )
        };
        if !is_alias(relay) || !saml.relay_state_apps().iter().any(|a| a == relay) {
            return Err(not_allowed());
        }
        let app = state
            .directory
            .get_app(&ClientId::new(relay.to_owned()))
            .await
            .ok()
            .flatten()
            .filter(|a| a.enabled && &a.tenant == reg.tenant());
        let Some(app) = app else {
            return Err(not_allowed());
        };
        Some(Launch {
            app: app.client_id.clone(),
            target: None,
        })
    };
    let a = saml
        .finish(raw, None, sp)
        .await
        .map_err(|e| (None, Refusal::new(e.error, e.detail)))?;
    spend(state, &a).await.map_err(|r| (None, r))?;
    let binding = crypto::random_token(32)
        .map_err(|e| (None, Refusal::new(LoginError::Internal, e.to_string())))?;
    Ok((
        Pending {
            provider: reg.record.id.clone(),
            ref_id: RefId::generate(),
            auth_request: None,
            launch,
            binding_hash: sha256_hex(&binding),
            unsolicited: true,
            identity: a.identity,
        },
        Some(binding),
    ))
}

#[derive(Deserialize)]
struct ContinueQuery {
    #[serde(rename = "continue")]
    token: Option<String>,
}

/// `GET /saml/{provider}/acs?continue=TOKEN`: bind to the browser, then decide and issue.
async fn acs_continue(
    State(state): State<AppState>,
    Path(provider): Path<String>,
    headers: HeaderMap,
    Query(q): Query<ContinueQuery>,
) -> Response {
    let mut ctx = PageCtx::from_headers(&headers);
    let pid = ProviderId::new(provider);
    let ev = Ev {
        provider: Some(pid.clone()),
        ..Default::default()
    };
    let token = q.token.unwrap_or_default();
    if token.is_empty() || token.len() > 128 {
        let r = Refusal::new(LoginError::StateInvalid, "ACS continuation without token");
        return refuse(&state, &RefId::generate(), &r, &ctx, ev);
    }
    let pending: Option<Pending> = match state
        .sessions
        .take_json(&format!("samlpending:{}", sha256_hex(&token)))
        .await
    {
        Ok(p) => p,
        Err(e) => return refuse(&state, &RefId::generate(), &store_err(e), &ctx, ev),
    };
    let Some(pending) = pending.filter(|p| p.provider == pid) else {
        let r = Refusal::new(
            LoginError::StateUsed,
            "ACS continuation unknown, expired or already used",
        );
        return refuse(&state, &RefId::generate(), &r, &ctx, ev);
    };
    let ref_id = pending.ref_id.clone();
    let Some(reg) = state.providers.get(&pid).filter(|r| r.record.enabled) else {
        let r = Refusal::new(
            LoginError::ProviderUnknown {
                provider: pid.to_string(),
            },
            "provider removed mid-flow",
        );
        return refuse(&state, &ref_id, &r, &ctx, ev);
    };
    ctx = ctx.provider(reg.record.display_name.clone());
    let ev = Ev {
        tenant: Some(reg.tenant().clone()),
        ..ev
    };
    let cookie = if pending.unsolicited {
        SAML_COOKIE
    } else {
        cookies::FLOW
    };
    let bound = match cookies::read(&headers, cookie, state.settings.secure_cookies) {
        CookieValue::One(v) => {
            crypto::ct_eq(sha256_hex(&v).as_bytes(), pending.binding_hash.as_bytes())
        }
        _ => false,
    };
    if !bound {
        let r = Refusal::new(
            LoginError::SamlInResponseToInvalid,
            "the response answers a sign-in of another browser (binding cookie missing or different)",
        );
        return refuse(&state, &ref_id, &r, &ctx, ev);
    }
    let f = flows(&state);
    let req = match &pending.auth_request {
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
    let identity = pending.identity;
    audit::record(
        &state,
        Some(&ref_id),
        "upstream.callback",
        ev.clone().detail(serde_json::json!({
            "protocol": "saml",
            "unsolicited": pending.unsolicited,
            "subject": identity.subject,
            "email": identity.email,
            "upstream_tenant": identity.upstream_tenant,
            "claims": redact_claims(identity.claims.clone()),
        })),
    );
    let account = match pipeline::decide(&state, &reg, &identity, &ref_id).await {
        Ok(a) => a,
        Err(r) => return refuse(&state, &ref_id, &r, &ctx, ev),
    };
    let mut resp = pipeline::issue_for(
        &state,
        &headers,
        &ref_id,
        &account,
        Some(&reg.record.id),
        &identity.label(),
        req.as_ref(),
        pending.launch.as_ref(),
        &ctx,
    )
    .await;
    if pending.unsolicited
        && let Ok(v) =
            HeaderValue::from_str(&cookies::clear(SAML_COOKIE, state.settings.secure_cookies))
    {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    resp
}
