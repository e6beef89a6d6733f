//! Homeroom as an OpenID provider toward apps: discovery, JWKS, authorize, token
//! (authorization_code, refresh_token), userinfo, introspection (RFC 7662), revocation
//! (RFC 7009) and RP-initiated logout.
//!
//! Errors follow the specs: until the client and its redirect URI are verified, refusals
//! are Homeroom's own page and never a redirect; after that, they go back to the app as
//! `error=` with `state` and `iss`. Token-endpoint errors are JSON with `no-store`.

use crate::AppState;
use crate::audit::{self, Ev};
use crate::cookies::{self, CookieValue};
use crate::flows::{AuthRequest, Family, Rotation, flows};
use crate::pages::{LogoutPage, html};
use crate::pipeline::{self, Refusal, refuse};
use crate::respond::{self, PageCtx, json_error, json_no_store};
use crate::tokens;
use axum::Router;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;
use homeroom_core::crypto::{self, sha256_hex};
use homeroom_core::{ClientId, LoginError, RefId};
use homeroom_directory::AppRecord;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use std::collections::HashMap;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/.well-known/openid-configuration", get(discovery))
        .route("/oauth2/jwks", get(jwks))
        .route("/oauth2/authorize", get(authorize).post(authorize))
        .route("/oauth2/token", axum::routing::post(token))
        .route("/oauth2/userinfo", get(userinfo).post(userinfo))
        .route("/oauth2/introspect", axum::routing::post(introspect))
        .route("/oauth2/revoke", axum::routing::post(revoke))
        .route("/oauth2/logout", get(logout).post(logout))
}

const SCOPES: [&str; 6] = [
    "openid",
    "profile",
    "email",
    "offline_access",
    "roles",
    crate::family::FAMILY_SCOPE,
];

/// The discovery document of this issuer (serialised once per `AppState`, see `Caches`).
pub fn discovery_document(settings: &crate::Settings) -> serde_json::Value {
    let i = &settings.issuer;
    serde_json::json!({
        "issuer": i,
        "authorization_endpoint": format!("{i}/oauth2/authorize"),
        "token_endpoint": format!("{i}/oauth2/token"),
        "userinfo_endpoint": format!("{i}/oauth2/userinfo"),
        "jwks_uri": format!("{i}/oauth2/jwks"),
        "introspection_endpoint": format!("{i}/oauth2/introspect"),
        "revocation_endpoint": format!("{i}/oauth2/revoke"),
        "end_session_endpoint": format!("{i}/oauth2/logout"),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": crate::keys::SUPPORTED_ALGS,
        "scopes_supported": SCOPES,
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "code_challenge_methods_supported": ["S256"],
        "claims_supported": ["sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "sid", "email", "email_verified", "name", "given_name", "family_name", "preferred_username", "roles", "families", "family_id"],
        "prompt_values_supported": ["none", "login", "consent", "select_account"],
        "authorization_response_iss_parameter_supported": true,
        "claims_parameter_supported": false,
        "request_parameter_supported": false,
        "request_uri_parameter_supported": false,
    })
}

async fn discovery(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let (body, etag) = state
        .caches
        .discovery(|| discovery_document(&state.settings));
    respond::cached_json(&headers, body, etag)
}

async fn jwks(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let keys = state.keyset();
    let (body, etag) = keys.jwks_body();
    respond::cached_json(&headers, body, etag)
}

/// Parses `application/x-www-form-urlencoded` (query or body), refusing repeated names
/// (RFC 6749 §3.1: parameters must not be included more than once).
pub fn parse_params(raw: &[u8]) -> Result<HashMap<String, String>, String> {
    let mut out = HashMap::new();
    for (k, v) in url::form_urlencoded::parse(raw) {
        if out.insert(k.to_string(), v.to_string()).is_some() {
            return Err(format!("parameter {k} repeated"));
        }
    }
    Ok(out)
}

async fn request_params(
    req: Request,
) -> (
    Method,
    HeaderMap,
    String,
    Result<HashMap<String, String>, String>,
) {
    let (parts, body) = req.into_parts();
    let query = parts.uri.query().unwrap_or("").to_owned();
    let params = if parts.method == Method::POST {
        match axum::body::to_bytes(body, 64 * 1024).await {
            Ok(b) => parse_params(&b),
            Err(_) => Err("request body too large".into()),
        }
    } else {
        parse_params(query.as_bytes())
    };
    (parts.method, parts.headers, query, params)
}

fn is_loopback_http(u: &url::Url) -> bool {
    u.scheme() == "http"
        && matches!(
            u.host_str(),
            Some("127.0.0.1") | Some("[::1]") | Some("localhost")
        )
}

/// Checks one redirect URI at registration (config or admin API); `None` when acceptable:
/// https, or http on loopback, or (native apps) a reverse-domain private-use scheme; never
/// wildcards, fragments, or `javascript:`/`data:`-like schemes (OP-04).
pub fn check_redirect_uri(uri: &str, native: bool) -> Option<String> {
    if uri.contains('*') {
        return Some("wildcards are not allowed; register each URI exactly".into());
    }
    let Ok(u) = url::Url::parse(uri) else {
        return Some("not an absolute URI".into());
    };
    if u.fragment().is_some() {
        return Some("must not contain a fragment".into());
    }
    match u.scheme() {
        "https" => None,
        "http" if is_loopback_http(&u) => None,
        "http" => {
            Some("plain http is only allowed for loopback addresses (127.0.0.1, [::1])".into())
        }
        "javascript" | "data" | "file" | "vbscript" | "blob" => {
            Some(format!("scheme {} is never allowed", u.scheme()))
        }
        s if native && s.contains('.') => None,
        s if native => Some(format!(
            "private-use scheme {s} must be a reverse domain name (e.g. com.example.app)"
        )),
        s => Some(format!(
            "scheme {s} is only allowed for native apps (set native = true)"
        )),
    }
}

/// RFC 8252 §7.3: a registered `http://127.0.0.1/...` or `http://[::1]/...` redirect URI
/// matches the same URI with any port. Everything else is exact string equality.
pub fn redirect_uri_allowed(registered: &[String], candidate: &str) -> bool {
    registered
        .iter()
        .any(|r| r == candidate || loopback_any_port(r, candidate))
}

fn loopback_any_port(registered: &str, candidate: &str) -> bool {
    for host in ["http://127.0.0.1", "http://[::1]"] {
        let Some(rest) = registered.strip_prefix(host) else {
            continue;
        };
        if !(rest.is_empty() || rest.starts_with('/')) {
            continue;
        }
        let Some(after) = candidate
            .strip_prefix(host)
            .and_then(|c| c.strip_prefix(':'))
        else {
            continue;
        };
        let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
        let valid_port = !digits.is_empty()
            && digits.len() <= 5
            && !digits.starts_with('0')
            && digits.parse::<u16>().is_ok();
        if valid_port && &after[digits.len()..] == rest {
            return true;
        }
    }
    false
}

async fn authorize(State(state): State<AppState>, req: Request) -> Response {
    let ip = req
        .extensions()
        .get::<crate::middleware::ClientIp>()
        .map(|c| c.0)
        .unwrap_or(std::net::IpAddr::from([127, 0, 0, 1]));
    let (_, headers, _, params) = request_params(req).await;
    let ref_id = RefId::generate();
    let ctx = PageCtx::from_headers(&headers);
    let params = match params {
        Ok(p) => p,
        Err(reason) => {
            let r = Refusal::new(
                LoginError::InvalidAuthRequest {
                    reason: reason.clone(),
                },
                reason,
            );
            return refuse(&state, &ref_id, &r, &ctx, Ev::default());
        }
    };
    let get = |k: &str| params.get(k).map(String::as_str).filter(|v| !v.is_empty());
    // 1. The client and its redirect URI, before anything may be redirected.
    let client_id = get("client_id").unwrap_or("").to_owned();
    let app = match state.app(&ClientId::new(client_id.clone())).await {
        Ok(Some(a)) => a,
        Ok(None) => {
            let r = Refusal::new(
                LoginError::ClientUnknown {
                    client_id: client_id.chars().take(100).collect(),
                },
                "unknown client_id",
            );
            return refuse(&state, &ref_id, &r, &ctx, Ev::default());
        }
        Err(e) => {
            return refuse(
                &state,
                &ref_id,
                &Refusal::new(LoginError::Internal, e.to_string()),
                &ctx,
                Ev::default(),
            );
        }
    };
    let ev = Ev {
        tenant: Some(app.tenant.clone()),
        client: Some(app.client_id.clone()),
        ..Default::default()
    };
    let ctx = ctx.app(app.name.clone());
    let redirect_uri = get("redirect_uri").unwrap_or("").to_owned();
    if !redirect_uri_allowed(&app.redirect_uris, &redirect_uri) {
        let r = Refusal::new(
            LoginError::RedirectUriMismatch {
                client_id: client_id.clone(),
            },
            format!(
                "redirect_uri {:?} not registered",
                redirect_uri.chars().take(300).collect::<String>()
            ),
        );
        return refuse(&state, &ref_id, &r, &ctx, ev);
    }
    // The same browser sent here again and again for this app: break the loop, explain.
    let (browser, new_browser_cookie) = crate::guards::browser_key(&state, &headers, ip);
    match crate::guards::app_hop(&state, &browser, app.client_id.as_str(), &app.name).await {
        Ok(Some(err)) => {
            let r = Refusal::new(err, "redirect loop detected at the authorization endpoint");
            audit::record(
                &state,
                Some(&ref_id),
                "loop.broken",
                ev.clone().detail(serde_json::json!({"where": "app"})),
            );
            return refuse(&state, &ref_id, &r, &ctx, ev);
        }
        Ok(None) => {}
        Err(e) => tracing::warn!(error = %e, "loop counter unavailable; not counted"),
    }
    let app_state = get("state").map(str::to_owned);
    let fail = |error: &str, description: &str| {
        audit::refusal(
            &state,
            &ref_id,
            &LoginError::InvalidAuthRequest {
                reason: description.to_owned(),
            },
            description,
            ev.clone(),
        );
        respond::app_error_redirect(
            &redirect_uri,
            error,
            description,
            app_state.as_deref(),
            &state.settings.issuer,
            &ref_id,
        )
    };
    if !app.enabled {
        return fail("access_denied", "the app is disabled");
    }
    // 2. The rest of the request: errors now go back to the app.
    if get("request").is_some() {
        return fail("request_not_supported", "request objects are not supported");
    }
    if get("request_uri").is_some() {
        return fail("request_uri_not_supported", "request_uri is not supported");
    }
    match get("response_type") {
        Some("code") => {}
        None => return fail("invalid_request", "response_type is required"),
        Some(_) => {
            return fail(
                "unsupported_response_type",
                "only response_type=code is supported",
            );
        }
    }
    if get("response_mode").is_some_and(|m| m != "query") {
        return fail("invalid_request", "only response_mode=query is supported");
    }
    let scope: Vec<String> = get("scope")
        .unwrap_or("")
        .split(' ')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    if !scope.iter().any(|s| s == "openid") {
        return fail("invalid_scope", "scope must include openid");
    }
    if let Some(bad) = scope.iter().find(|s| !app.allowed_scopes.contains(s)) {
        return fail(
            "invalid_scope",
            &format!("scope {bad} is not allowed for this app"),
        );
    }
    let challenge = get("code_challenge").map(str::to_owned);
    match (challenge.as_deref(), get("code_challenge_method")) {
        (None, None) if app.is_public() => {
            return fail(
                "invalid_request",
                "PKCE (code_challenge with S256) is required for public clients",
            );
        }
        (None, None) => {}
        (Some(c), Some("S256"))
            if c.len() == 43
                && c.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') => {}
        (Some(_), Some("S256")) => {
            return fail(
                "invalid_request",
                "code_challenge must be a base64url SHA-256 (43 characters)",
            );
        }
        (None, Some(_)) => {
            return fail(
                "invalid_request",
                "code_challenge_method without code_challenge",
            );
        }
        _ => return fail("invalid_request", "code_challenge_method must be S256"),
    }
    let prompt: Vec<String> = get("prompt")
        .unwrap_or("")
        .split(' ')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    if prompt
        .iter()
        .any(|p| !matches!(p.as_str(), "none" | "login" | "consent" | "select_account"))
    {
        return fail("invalid_request", "unknown prompt value");
    }
    if prompt.iter().any(|p| p == "none") && prompt.len() > 1 {
        return fail(
            "invalid_request",
            "prompt=none cannot be combined with other values",
        );
    }
    let max_age = match get("max_age").map(str::parse::<i64>) {
        None => None,
        Some(Ok(v)) if v >= 0 => Some(v),
        Some(_) => return fail("invalid_request", "max_age must be a non-negative integer"),
    };
    let nonce = get("nonce").map(str::to_owned);
    if nonce.as_ref().is_some_and(|n| n.len() > 512)
        || app_state.as_ref().is_some_and(|s| s.len() > 2048)
    {
        return fail("invalid_request", "state or nonce too long");
    }
    let now = state.now();
    let Ok(id) = crypto::random_token(24) else {
        return refuse(
            &state,
            &ref_id,
            &Refusal::new(LoginError::Internal, "randomness unavailable"),
            &ctx,
            ev,
        );
    };
    let auth = AuthRequest {
        id,
        ref_id: ref_id.clone(),
        client_id: app.client_id.clone(),
        tenant: app.tenant.clone(),
        redirect_uri,
        scope,
        state: app_state,
        nonce,
        code_challenge: challenge,
        prompt,
        max_age,
        login_hint: get("login_hint").map(|s| s.chars().take(320).collect()),
        idp_hint: get("idp").or(get("kc_idp_hint")).map(str::to_owned),
        created_at: now,
        expires_at: now + state.settings.flow_ttl,
    };
    audit::record(&state, Some(&ref_id), "login.start", ev.detail(serde_json::json!({"scope": auth.scope, "prompt": auth.prompt, "max_age": auth.max_age})));
    let mut resp = pipeline::resume(&state, &headers, auth, &browser).await;
    if let Some(c) = new_browser_cookie {
        resp.headers_mut().append(header::SET_COOKIE, c);
    }
    resp
}

/// Authenticates the client at the token, introspection and revocation endpoints:
/// `client_secret_basic` or `client_secret_post` (never both, never in the query), or a
/// public client naming itself when `allow_public`.
async fn authenticate_client(
    state: &AppState,
    headers: &HeaderMap,
    query: &str,
    form: &HashMap<String, String>,
    allow_public: bool,
) -> Result<std::sync::Arc<AppRecord>, Response> {
    if query.contains("client_secret") {
        return Err(json_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "client credentials must not be sent in the URL",
        ));
    }
    let basic = match headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        Some(h) if h.len() > 6 && h[..6].eq_ignore_ascii_case("basic ") => {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(h[6..].trim())
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .and_then(|s| {
                    s.split_once(':')
                        .map(|(a, b)| (form_decode(a), form_decode(b)))
                });
            match decoded {
                Some(pair) => Some(pair),
                None => {
                    return Err(json_error(
                        StatusCode::UNAUTHORIZED,
                        "invalid_client",
                        "malformed Basic credentials",
                    ));
                }
            }
        }
        _ => None,
    };
    let post_secret = form.get("client_secret").cloned();
    let (client_id, secret) = match (basic, post_secret) {
        (Some(_), Some(_)) => {
            return Err(json_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "use one client authentication method",
            ));
        }
        (Some((id, secret)), None) => {
            if form.get("client_id").is_some_and(|f| f != &id) {
                return Err(json_error(
                    StatusCode::UNAUTHORIZED,
                    "invalid_client",
                    "client_id does not match the credentials",
                ));
            }
            (id, Some(secret))
        }
        (None, secret) => (form.get("client_id").cloned().unwrap_or_default(), secret),
    };
    let invalid = || {
        json_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "client authentication failed",
        )
    };
    let app = match state.app(&ClientId::new(client_id)).await {
        Ok(Some(a)) if a.enabled => a,
        Ok(_) => return Err(invalid()),
        Err(e) => {
            tracing::error!(error = %e, "directory error during client authentication");
            return Err(json_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "try again later",
            ));
        }
    };
    match (app.secret_hash.as_deref(), secret.as_deref()) {
        (Some(hash), Some(secret))
            if crypto::ct_eq(sha256_hex(secret).as_bytes(), hash.as_bytes()) =>
        {
            Ok(app)
        }
        (None, None) if allow_public => Ok(app),
        _ => Err(invalid()),
    }
}

/// The client id a token request names (Basic user or `client_id`), unauthenticated.
fn claimed_client(headers: &HeaderMap, form: &HashMap<String, String>) -> String {
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .filter(|h| h.len() > 6 && h[..6].eq_ignore_ascii_case("basic "))
        .and_then(|h| {
            base64::engine::general_purpose::STANDARD
                .decode(h[6..].trim())
                .ok()
        })
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| s.split_once(':').map(|(id, _)| form_decode(id)));
    basic
        .or_else(|| form.get("client_id").cloned())
        .unwrap_or_default()
        .chars()
        .take(200)
        .collect()
}

fn form_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

async fn token(State(state): State<AppState>, req: Request) -> Response {
    let (_, headers, query, params) = request_params(req).await;
    let form = match params {
        Ok(p) => p,
        Err(reason) => return json_error(StatusCode::BAD_REQUEST, "invalid_request", &reason),
    };
    // Limited per client (the one claimed, so guessing secrets is limited too), never per
    // browser address: many apps sit behind one egress.
    if let Some(r) = crate::limits::token_endpoint(&state, &claimed_client(&headers, &form)).await {
        return r;
    }
    let app = match authenticate_client(&state, &headers, &query, &form, true).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    match form.get("grant_type").map(String::as_str) {
        Some("authorization_code") => grant_code(&state, &app, &form).await,
        Some("refresh_token") => grant_refresh(&state, &app, &form).await,
        Some("client_credentials") => grant_client_credentials(&state, &app, &form).await,
        Some(_) => json_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "supported: authorization_code, refresh_token",
        ),
        None => json_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "grant_type is required",
        ),
    }
}

async fn grant_code(state: &AppState, app: &AppRecord, form: &HashMap<String, String>) -> Response {
    let f = flows(state);
    let Some(raw) = form.get("code") else {
        return json_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "code is required",
        );
    };
    let code = match f.redeem_code(raw).await {
        Ok(Ok(c)) => c,
        Ok(Err(Some(family))) => {
            // Second redemption: revoke everything the first one issued.
            let _ = f.revoke_family(&family).await;
            audit::record(
                state,
                None,
                "token.code_reuse",
                Ev {
                    client: Some(app.client_id.clone()),
                    ..Default::default()
                }
                .detail(serde_json::json!({"family_revoked": true})),
            );
            return json_error(
                StatusCode::BAD_REQUEST,
                "invalid_grant",
                "the code was already used; tokens issued from it are revoked",
            );
        }
        Ok(Err(None)) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                "invalid_grant",
                "unknown or expired code",
            );
        }
        Err(e) => {
            tracing::error!(error = %e, "session store error at token endpoint");
            return json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "try again",
            );
        }
    };
    let ev = Ev {
        tenant: Some(code.tenant.clone()),
        client: Some(app.client_id.clone()),
        account: Some(code.account.clone()),
        ..Default::default()
    };
    let bad = |why: &str| {
        audit::record(
            state,
            Some(&code.ref_id),
            "token.refused",
            ev.clone().detail(serde_json::json!({"reason": why})),
        );
        json_error(StatusCode::BAD_REQUEST, "invalid_grant", why)
    };
    if code.client_id != app.client_id {
        return bad("the code was issued to another client");
    }
    if form.get("redirect_uri") != Some(&code.redirect_uri) {
        return bad("redirect_uri does not match the authorization request");
    }
    if code.expires_at <= state.now() {
        return bad("the code expired");
    }
    match (&code.code_challenge, form.get("code_verifier")) {
        (Some(ch), Some(v))
            if crypto::is_valid_pkce_verifier(v)
                && crypto::ct_eq(crypto::pkce_s256(v).as_bytes(), ch.as_bytes()) => {}
        (Some(_), _) => return bad("code_verifier missing or wrong"),
        (None, Some(_)) => return bad("code_verifier sent but no code_challenge was"),
        (None, None) if app.is_public() => return bad("public clients must use PKCE"),
        (None, None) => {}
    }
    let family = Family {
        id: code.family.clone(),
        client_id: code.client_id.clone(),
        tenant: code.tenant.clone(),
        account: code.account.clone(),
        session_hash: code.session_hash.clone(),
        scope: code.scope.clone(),
        auth_time: code.auth_time,
        nonce: code.nonce.clone(),
        guardian_family: code.guardian_family.clone(),
        expires_at: state.now()
            + if code.scope.iter().any(|s| s == "offline_access") {
                state.settings.refresh_ttl
            } else {
                state
                    .settings
                    .access_token_ttl
                    .max(state.settings.id_token_ttl)
            },
    };
    if let Err(e) = f.put_family(&family).await {
        tracing::error!(error = %e, "session store error at token endpoint");
        return json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            "try again",
        );
    }
    let resp = token_response(state, app, &family, true).await;
    audit::record(
        state,
        Some(&code.ref_id),
        "token.issued",
        ev.detail(serde_json::json!({"grant": "authorization_code", "scope": family.scope})),
    );
    resp
}

async fn token_response(
    state: &AppState,
    app: &AppRecord,
    family: &Family,
    with_refresh_if_offline: bool,
) -> Response {
    let account = match state.directory.get_account(&family.account).await {
        Ok(Some(a)) => a,
        _ => {
            return json_error(
                StatusCode::BAD_REQUEST,
                "invalid_grant",
                "the account no longer exists",
            );
        }
    };
    if account.status != homeroom_directory::AccountStatus::Active {
        let _ = flows(state).revoke_family(&family.id).await;
        return json_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "the account is not active",
        );
    }
    let alg = app.id_token_alg.as_str();
    let at = match tokens::access_token(state, family, alg) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %e, "signing failed");
            return json_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "signing failed",
            );
        }
    };
    let extra = match crate::family::claims(
        state,
        &account,
        &family.scope,
        family.guardian_family.as_deref(),
    )
    .await
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "directory error reading family claims");
            return json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "try again",
            );
        }
    };
    let idt = match tokens::id_token(state, family, &account, alg, Some(&at), extra) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %e, "signing failed");
            return json_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "signing failed",
            );
        }
    };
    let mut body = serde_json::json!({
        "access_token": at,
        "token_type": "Bearer",
        "expires_in": state.settings.access_token_ttl,
        "id_token": idt,
        "scope": family.scope.join(" "),
    });
    if with_refresh_if_offline && family.scope.iter().any(|s| s == "offline_access") {
        match flows(state).issue_refresh(family).await {
            Ok(rt) => body["refresh_token"] = serde_json::Value::String(rt),
            Err(e) => {
                tracing::error!(error = %e, "session store error issuing refresh token");
                return json_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "temporarily_unavailable",
                    "try again",
                );
            }
        }
    }
    json_no_store(body)
}

/// Client credentials (automation, e.g. the admin API): confidential clients only, and only
/// scopes the app was given. The token's subject is the client itself.
async fn grant_client_credentials(
    state: &AppState,
    app: &AppRecord,
    form: &HashMap<String, String>,
) -> Response {
    if app.is_public() {
        return json_error(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            "public clients cannot use client_credentials",
        );
    }
    let scope: Vec<String> = form
        .get("scope")
        .map(|s| {
            s.split(' ')
                .filter(|x| !x.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    if scope.is_empty()
        || scope
            .iter()
            .any(|s| s == "openid" || s == "offline_access" || !app.allowed_scopes.contains(s))
    {
        return json_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            "ask for scopes the app was given (not openid or offline_access)",
        );
    }
    let Ok(id) = crypto::random_token(16) else {
        return json_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "randomness unavailable",
        );
    };
    let family = Family {
        id,
        client_id: app.client_id.clone(),
        tenant: app.tenant.clone(),
        account: homeroom_core::AccountId::new(format!("client:{}", app.client_id)),
        session_hash: String::new(),
        scope,
        auth_time: state.now(),
        nonce: None,
        guardian_family: None,
        expires_at: state.now() + state.settings.access_token_ttl,
    };
    if let Err(e) = flows(state).put_family(&family).await {
        tracing::error!(error = %e, "session store error at token endpoint");
        return json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            "try again",
        );
    }
    let at = match tokens::access_token(state, &family, &app.id_token_alg) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %e, "signing failed");
            return json_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "signing failed",
            );
        }
    };
    audit::record(
        state,
        None,
        "token.issued",
        Ev {
            tenant: Some(app.tenant.clone()),
            client: Some(app.client_id.clone()),
            ..Default::default()
        }
        .detail(serde_json::json!({"grant": "client_credentials", "scope": family.scope})),
    );
    json_no_store(serde_json::json!({
        "access_token": at, "token_type": "Bearer", "expires_in": state.settings.access_token_ttl, "scope": family.scope.join(" "),
    }))
}

async fn grant_refresh(
    state: &AppState,
    app: &AppRecord,
    form: &HashMap<String, String>,
) -> Response {
    let Some(raw) = form.get("refresh_token") else {
        return json_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "refresh_token is required",
        );
    };
    let f = flows(state);
    let requested: Option<Vec<String>> = form.get("scope").map(|r| {
        r.split(' ')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    });
    let (mut family, new_token) = match f
        .rotate_refresh(raw, &app.client_id, requested.as_deref())
        .await
    {
        Ok(Rotation::Rotated { family, new_token }) => {
            (std::sync::Arc::unwrap_or_clone(family), new_token)
        }
        Ok(Rotation::Reused) => {
            audit::record(
                state,
                None,
                "token.refresh_reuse",
                Ev {
                    client: Some(app.client_id.clone()),
                    ..Default::default()
                }
                .detail(serde_json::json!({"family_revoked": true})),
            );
            return json_error(
                StatusCode::BAD_REQUEST,
                "invalid_grant",
                "the refresh token was already used; its family is revoked",
            );
        }
        Ok(Rotation::Invalid) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                "invalid_grant",
                "unknown, expired or revoked refresh token",
            );
        }
        Ok(Rotation::ScopeWidened) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                "invalid_scope",
                "a refresh cannot widen the scope",
            );
        }
        Err(e) => {
            tracing::error!(error = %e, "session store error at token endpoint");
            return json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "try again",
            );
        }
    };
    if let Some(req) = requested {
        family.scope = req;
    }
    let mut resp = token_response(state, app, &family, false).await;
    if resp.status().is_success() {
        let body = axum::body::to_bytes(std::mem::take(resp.body_mut()), 1 << 20)
            .await
            .unwrap_or_default();
        let mut v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        v["refresh_token"] = serde_json::Value::String(new_token);
        audit::record(
            state,
            None,
            "token.refreshed",
            Ev {
                tenant: Some(family.tenant.clone()),
                client: Some(app.client_id.clone()),
                account: Some(family.account.clone()),
                ..Default::default()
            },
        );
        return json_no_store(v);
    }
    resp
}

fn bearer_error(desc: &str) -> Response {
    let mut r = (
        StatusCode::UNAUTHORIZED,
        axum::Json(serde_json::json!({"error": "invalid_token", "error_description": desc})),
    )
        .into_response();
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer error=\"invalid_token\""),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

async fn userinfo(State(state): State<AppState>, req: Request) -> Response {
    if req
        .uri()
        .query()
        .is_some_and(|q| q.contains("access_token"))
    {
        return bearer_error("send the access token in the Authorization header");
    }
    let token = match req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        Some(h) if h.len() > 7 && h[..7].eq_ignore_ascii_case("bearer ") => {
            h[7..].trim().to_owned()
        }
        _ => {
            let mut r = StatusCode::UNAUTHORIZED.into_response();
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return r;
        }
    };
    let Some(active) = tokens::validate_access_token(&state, &token).await else {
        return bearer_error("the access token is invalid, expired or revoked");
    };
    let Ok(Some(account)) = state.directory.get_account(&active.family.account).await else {
        return bearer_error("the account no longer exists");
    };
    let scope: Vec<String> = active.claims["scope"]
        .as_str()
        .unwrap_or("")
        .split(' ')
        .map(str::to_owned)
        .collect();
    let mut out = serde_json::Map::new();
    out.insert("sub".into(), serde_json::json!(account.id.as_str()));
    tokens::profile_claims(&account, &scope, &mut out);
    match crate::family::claims(
        &state,
        &account,
        &scope,
        active.family.guardian_family.as_deref(),
    )
    .await
    {
        Ok(extra) => out.extend(extra),
        Err(e) => {
            tracing::error!(error = %e, "directory error reading family claims");
            return json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "try again",
            );
        }
    }
    json_no_store(serde_json::Value::Object(out))
}

/// RFC 7662 answer for an active access token: the claims, borrowed from the verified-token
/// cache (serialised straight from it, no intermediate JSON object per request).
#[derive(serde::Serialize)]
struct ActiveAccessToken<'a> {
    active: bool,
    scope: &'a serde_json::Value,
    client_id: &'a serde_json::Value,
    sub: &'a serde_json::Value,
    exp: &'a serde_json::Value,
    iat: &'a serde_json::Value,
    iss: &'a serde_json::Value,
    aud: &'a serde_json::Value,
    jti: &'a serde_json::Value,
    token_type: &'static str,
}

async fn introspect(State(state): State<AppState>, req: Request) -> Response {
    let (_, headers, query, params) = request_params(req).await;
    let form = match params {
        Ok(p) => p,
        Err(reason) => return json_error(StatusCode::BAD_REQUEST, "invalid_request", &reason),
    };
    let app = match authenticate_client(&state, &headers, &query, &form, false).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let inactive = || json_no_store(serde_json::json!({"active": false}));
    let Some(token) = form.get("token") else {
        return inactive();
    };
    if let Some(active) = tokens::validate_access_token(&state, token).await {
        if active.family.client_id != app.client_id {
            return inactive();
        }
        let c = &active.claims;
        return json_no_store(ActiveAccessToken {
            active: true,
            scope: &c["scope"],
            client_id: &c["client_id"],
            sub: &c["sub"],
            exp: &c["exp"],
            iat: &c["iat"],
            iss: &c["iss"],
            aud: &c["aud"],
            jti: &c["jti"],
            token_type: "Bearer",
        });
    }
    // A refresh token: active while its family is.
    if let Ok(Some(rec)) = flows(&state).refresh_family(token).await
        && rec.client_id == app.client_id
        && let Ok(Some(fam)) = flows(&state).get_family(&rec.family).await
    {
        return json_no_store(serde_json::json!({
            "active": true, "scope": fam.scope.join(" "), "client_id": fam.client_id, "sub": fam.account,
            "exp": fam.expires_at, "iss": state.settings.issuer, "token_type": "refresh_token",
        }));
    }
    inactive()
}

async fn revoke(State(state): State<AppState>, req: Request) -> Response {
    let (_, headers, query, params) = request_params(req).await;
    let form = match params {
        Ok(p) => p,
        Err(reason) => return json_error(StatusCode::BAD_REQUEST, "invalid_request", &reason),
    };
    let app = match authenticate_client(&state, &headers, &query, &form, true).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let Some(token) = form.get("token") else {
        return json_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "token is required",
        );
    };
    let f = flows(&state);
    let family = if let Ok(Some(rec)) = f.refresh_family(token).await {
        Some((rec.family, rec.client_id))
    } else {
        tokens::validate_access_token(&state, token)
            .await
            .map(|a| (a.family.id.clone(), a.family.client_id.clone()))
    };
    if let Some((fam, client)) = family {
        // RFC 7009 §2.1: only the client the token was issued to can revoke it.
        if client == app.client_id {
            let _ = f.revoke_family(&fam).await;
            audit::record(
                &state,
                None,
                "token.revoked",
                Ev {
                    client: Some(app.client_id.clone()),
                    ..Default::default()
                },
            );
        }
    }
    json_no_store(serde_json::json!({}))
}

async fn logout(State(state): State<AppState>, req: Request) -> Response {
    let (method, headers, _, params) = request_params(req).await;
    let ref_id = RefId::generate();
    let ctx = PageCtx::from_headers(&headers);
    let params = match params {
        Ok(p) => p,
        Err(reason) => {
            return refuse(
                &state,
                &ref_id,
                &Refusal::new(
                    LoginError::InvalidAuthRequest {
                        reason: reason.clone(),
                    },
                    reason,
                ),
                &ctx,
                Ev::default(),
            );
        }
    };
    let get = |k: &str| params.get(k).map(String::as_str).filter(|v| !v.is_empty());
    let secure = state.settings.secure_cookies;
    // Which client, and is the hint ours?
    let mut client_id = get("client_id").map(str::to_owned);
    let hint_valid = match get("id_token_hint") {
        Some(hint) => match tokens::validate_id_token_hint(&state, hint) {
            Some(claims) => {
                let aud = claims["aud"].as_str().unwrap_or("").to_owned();
                if client_id.as_ref().is_some_and(|c| c != &aud) {
                    return refuse(
                        &state,
                        &ref_id,
                        &Refusal::new(
                            LoginError::IdTokenHintInvalid,
                            "client_id differs from the hint's audience",
                        ),
                        &ctx,
                        Ev::default(),
                    );
                }
                client_id = Some(aud);
                true
            }
            None => {
                return refuse(
                    &state,
                    &ref_id,
                    &Refusal::new(
                        LoginError::IdTokenHintInvalid,
                        "id_token_hint not issued by this Homeroom",
                    ),
                    &ctx,
                    Ev::default(),
                );
            }
        },
        None => false,
    };
    let app = match &client_id {
        Some(c) => state
            .directory
            .get_app(&ClientId::new(c.clone()))
            .await
            .ok()
            .flatten(),
        None => None,
    };
    let post_logout = match get("post_logout_redirect_uri") {
        Some(uri) => match &app {
            Some(a) if a.post_logout_redirect_uris.iter().any(|r| r == uri) => Some(uri.to_owned()),
            _ => {
                return refuse(
                    &state,
                    &ref_id,
                    &Refusal::new(
                        LoginError::PostLogoutRedirectInvalid,
                        "post_logout_redirect_uri not registered for the client",
                    ),
                    &ctx,
                    Ev::default(),
                );
            }
        },
        None => None,
    };
    let app_state = get("state").map(str::to_owned);
    let confirmed = if method == Method::POST {
        let form_token = get("csrf").unwrap_or("");
        if !crate::local::csrf_ok(&state, &headers, form_token) {
            return refuse(
                &state,
                &ref_id,
                &Refusal::new(LoginError::Csrf, "logout POST without a valid CSRF token"),
                &ctx,
                Ev::default(),
            );
        }
        true
    } else {
        false
    };
    if !hint_valid && !confirmed {
        // Ask first: a bare GET (e.g. a cross-site <img>) must not sign anyone out.
        let Ok(csrf) = crypto::random_token(32) else {
            return refuse(
                &state,
                &ref_id,
                &Refusal::new(LoginError::Internal, "randomness"),
                &ctx,
                Ev::default(),
            );
        };
        let app_name = app.as_ref().map(|a| a.name.clone()).unwrap_or_default();
        let mut resp = html(
            StatusCode::OK,
            &LogoutPage {
                app_name: &app_name,
                csrf: &csrf,
                post_logout_redirect_uri: post_logout.as_deref().unwrap_or(""),
                client_id: client_id.as_deref().unwrap_or(""),
                state: app_state.as_deref().unwrap_or(""),
            },
        );
        if let Ok(v) = HeaderValue::from_str(&cookies::set(cookies::CSRF, &csrf, secure, Some(600)))
        {
            resp.headers_mut().append(header::SET_COOKIE, v);
        }
        return resp;
    }
    if let CookieValue::One(raw) = cookies::read(&headers, cookies::SESSION, secure)
        && let Err(e) = flows(&state).end_session(&sha256_hex(&raw)).await
    {
        return refuse(
            &state,
            &ref_id,
            &Refusal::new(LoginError::Internal, e.to_string()),
            &ctx,
            Ev::default(),
        );
    }
    audit::record(
        &state,
        Some(&ref_id),
        "session.ended",
        Ev {
            client: client_id.map(ClientId::new),
            ..Default::default()
        },
    );
    let mut resp = match post_logout {
        Some(uri) => {
            let params: Vec<(&str, &str)> = app_state
                .as_deref()
                .map(|s| vec![("state", s)])
                .unwrap_or_default();
            respond::redirect(
                if method == Method::POST {
                    StatusCode::SEE_OTHER
                } else {
                    StatusCode::FOUND
                },
                &respond::with_query(&uri, &params),
            )
        }
        None => crate::pages::message(
            StatusCode::OK,
            "You're signed out",
            "You are signed out of Homeroom on this device.",
            None,
        ),
    };
    for c in [
        cookies::clear(cookies::SESSION, secure),
        cookies::clear(cookies::CSRF, secure),
    ] {
        if let Ok(v) = HeaderValue::from_str(&c) {
            resp.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    resp
}

/// A POST is same-origin when its `Origin` (or, failing that, nothing) names our issuer.
/// `Origin: null` is what browsers send on same-origin form posts from our `no-referrer`
/// pages; it passes only when the browser also says `Sec-Fetch-Site: same-origin`.
pub(crate) fn same_origin(state: &AppState, headers: &HeaderMap) -> bool {
    match headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        None => true,
        Some("null") => headers
            .get("sec-fetch-site")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v == "same-origin"),
        Some(o) => {
            state.settings.issuer.starts_with(o)
                && state.settings.issuer[o.len()..]
                    .chars()
                    .next()
                    .is_none_or(|c| c == '/')
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_redirect_matching() {
        let reg = vec!["https://app.example.test/cb".to_owned()];
        assert!(redirect_uri_allowed(&reg, "https://app.example.test/cb"));
        for bad in [
            "https://app.example.test/cb/",
            "https://app.example.test/CB",
            "https://app.example.test/cb?x=1",
            "https://app.example.test/cb#x",
            "https://app.example.test:443/cb",
            "https://app.example.test./cb",
            "https://app.example.test@evil.example/cb",
            "https://app.example.test/cb/../admin",
            "https://аpp.example.test/cb",
        ] {
            assert!(!redirect_uri_allowed(&reg, bad), "{bad}");
        }
    }

    #[test]
    fn loopback_matches_any_port_only() {
        let reg = vec![
            "http://127.0.0.1/cb".to_owned(),
            "http://[::1]/cb".to_owned(),
        ];
        assert!(redirect_uri_allowed(&reg, "http://127.0.0.1:54321/cb"));
        assert!(redirect_uri_allowed(&reg, "http://[::1]:8080/cb"));
        assert!(redirect_uri_allowed(&reg, "http://127.0.0.1/cb"));
        for bad in [
            "http://127.0.0.1:99999/cb",
            "http://127.0.0.1:80/cbx",
            "http://127.0.0.1:80@evil/cb",
            "http://127.0.0.1:/cb",
            "http://localhost:80/cb",
            "http://127.0.0.1:080/cb",
        ] {
            assert!(!redirect_uri_allowed(&reg, bad), "{bad}");
        }
        let fixed = vec!["http://127.0.0.1:8081/cb".to_owned()];
        assert!(!redirect_uri_allowed(&fixed, "http://127.0.0.1:8082/cb"));
    }

    #[test]
    fn repeated_parameters_are_refused() {
        assert!(parse_params(b"a=1&b=2").is_ok());
        assert!(parse_params(b"a=1&a=2").is_err());
    }
}
