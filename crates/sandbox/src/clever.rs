//! The emulated Clever (providers.md §3), OAuth host and API host on one origin.
//!
//! [`CleverIdp`] owns Clever's wire formats and quirks on top of the shared portal core:
//!
//! | path | what |
//! | --- | --- |
//! | `GET /oauth/authorize` | `response_type=code`, `client_id`, exact `redirect_uri`, optional `state`, `district_id`, `nonce`; picker, or at once for a known `login_hint` (sandbox convenience) |
//! | `POST /oauth/authorize` | the picker's choice |
//! | `POST /oauth/tokens` | **HTTP Basic required**; credentials in the body are refused (`invalid_client`); JSON or form body; `grant_type=authorization_code`, `code`, `redirect_uri` (must match); codes live 60 s, single use (reuse: 400) |
//! | `GET /v3.0/me` | `{type: "user", data: {id, district, type, authorized_by}, links}` |
//! | `GET /v3.0/users/{id}` | the v3 `User` with the `roles` object (only the token's own user) |
//! | `GET /userinfo` | OIDC-style fields, `email_verified: false` |
//! | `GET /.well-known/openid-configuration`, `GET /oauth/jwks` | OIDC mode (issuer = the base URL) |
//! | `GET /portal`, `GET /portal/launch` | the Clever Portal: tiles redirect to the app's first redirect URI with `?code=` and no `state` |
//! | `POST /_sandbox/tamper` | sets the [`PortalTamper`] |
//!
//! The JWKS path is an assumption (Clever's is read from discovery).

use crate::keys::SandboxKeys;
use crate::portal::{
    CoreConfig, PortalCore, basic_credentials, body_params, oauth_error, secret_ok,
    serve_on_loopback,
};
use crate::users::PortalUser;
use crate::{PortalTamper, SandboxClient, SandboxError, ServerGuard};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Form, Json, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

/// The district named under [`PortalTamper::WrongDistrict`].
pub const CLEVER_OTHER_DISTRICT_ID: &str = "5e8f1c2a9b3d4e0012a7ffff";

/// Everything a [`CleverIdp`] is made from.
#[derive(Debug, Clone)]
pub struct CleverIdpConfig {
    /// Base URL of the emulator including any path prefix (stands for both
    /// `https://clever.com` and `https://api.clever.com`; the OIDC issuer).
    /// [`CleverIdp::bind_and_serve`] overwrites it with the bound address.
    pub base_url: String,
    /// Registered apps; the first redirect URI is the one portal launches use.
    pub clients: Vec<SandboxClient>,
    /// People (of any district).
    pub users: Vec<PortalUser>,
    /// Signs ID tokens (OIDC mode).
    pub keys: SandboxKeys,
    /// Authorization-code lifetime, seconds (Clever: 60).
    pub code_ttl_secs: u64,
    /// Whether the token response carries an `id_token` (Clever's per-app OIDC mode).
    pub oidc_mode: bool,
}

impl CleverIdpConfig {
    /// A config with 60-second codes and OIDC mode on; `base_url` empty (set it, or let
    /// [`CleverIdp::bind_and_serve`] do it).
    pub fn new(clients: Vec<SandboxClient>, users: Vec<PortalUser>, keys: SandboxKeys) -> Self {
        Self {
            base_url: String::new(),
            clients,
            users,
            keys,
            code_ttl_secs: 60,
            oidc_mode: true,
        }
    }
}

struct Inner {
    base_url: String,
    oidc_mode: bool,
    core: PortalCore,
}

/// The emulated Clever. Cloning shares the same state.
#[derive(Clone)]
pub struct CleverIdp {
    inner: Arc<Inner>,
}

impl CleverIdp {
    /// An emulator from its config (base URL as given).
    pub fn new(config: CleverIdpConfig) -> Self {
        let core = PortalCore::new(CoreConfig {
            clients: config.clients,
            users: config.users,
            keys: config.keys,
            code_ttl_secs: config.code_ttl_secs,
            other_org: CLEVER_OTHER_DISTRICT_ID.to_owned(),
            portal_name: "Clever".into(),
        });
        Self {
            inner: Arc::new(Inner {
                base_url: config.base_url.trim_end_matches('/').to_owned(),
                oidc_mode: config.oidc_mode,
                core,
            }),
        }
    }

    /// Binds `127.0.0.1:0`, sets the base URL to `http://127.0.0.1:{port}` and serves the
    /// router at the root until the guard is dropped.
    pub async fn bind_and_serve(
        mut config: CleverIdpConfig,
    ) -> Result<(CleverIdp, SocketAddr, ServerGuard), SandboxError> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        config.base_url = format!("http://{}", listener.local_addr()?);
        let idp = CleverIdp::new(config);
        let (addr, guard) = serve_on_loopback(listener, idp.router()).await?;
        Ok((idp, addr, guard))
    }

    /// The base URL (issuer in OIDC mode).
    pub fn base_url(&self) -> &str {
        &self.inner.base_url
    }

    /// Sets the misbehaviour for the following requests.
    pub fn set_tamper(&self, tamper: PortalTamper) {
        self.inner.core.set_tamper(tamper);
    }

    /// How many requests reached `path` (`/oauth/tokens`, `/v3.0/me`, `/v3.0/users`,
    /// `/userinfo`, `/oauth/authorize`, `/portal/launch`, ...; without any prefix).
    pub fn requests(&self, path: &str) -> u64 {
        self.inner.core.requests(path)
    }

    /// The routes, relative to the router root.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/oauth/authorize", get(authorize_get).post(authorize_post))
            .route("/oauth/tokens", post(tokens))
            .route("/oauth/jwks", get(jwks))
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/v3.0/me", get(me))
            .route("/v3.0/users/{id}", get(user))
            .route("/userinfo", get(userinfo))
            .route("/portal", get(portal))
            .route("/portal/launch", get(launch))
            .route("/_sandbox/tamper", post(set_tamper))
            .with_state(self.clone())
    }

    fn core(&self) -> &PortalCore {
        &self.inner.core
    }

    fn legacy_id(u: &PortalUser) -> String {
        u.id.chars().rev().collect()
    }

    /// The v3 `roles` object.
    fn roles_object(u: &PortalUser) -> Value {
        let schools: Vec<&str> = u.school.iter().map(String::as_str).collect();
        let creds = json!({"district_username": u.username});
        let mut roles = Map::new();
        for r in &u.roles {
            let v = match r.as_str() {
                "student" => json!({
                    "sis_id": u.sourced_id, "student_number": u.sourced_id, "state_id": null,
                    "grade": u.grade.clone().unwrap_or_default(), "school": u.school, "schools": schools,
                    "legacy_id": Self::legacy_id(u), "credentials": creds,
                }),
                "teacher" => json!({
                    "sis_id": u.sourced_id, "teacher_number": u.sourced_id, "title": "Teacher",
                    "school": u.school, "schools": schools, "legacy_id": Self::legacy_id(u),
                    "credentials": creds,
                }),
                "staff" => json!({
                    "staff_id": u.sourced_id, "title": "Staff", "department": "",
                    "schools": schools, "roles": [], "legacy_id": Self::legacy_id(u),
                    "credentials": creds,
                }),
                "district_admin" => {
                    json!({"legacy_id": Self::legacy_id(u), "title": "Administrator"})
                }
                "contact" => {
                    json!({"student_relationships": [], "phone": "", "sis_id": u.sourced_id})
                }
                _ => json!({}),
            };
            roles.insert(r.clone(), v);
        }
        Value::Object(roles)
    }

    /// `/userinfo` and ID-token claims common to both.
    fn oidc_claims(u: &PortalUser) -> Map<String, Value> {
        let mut c = Map::new();
        c.insert("sub".into(), json!(u.id));
        c.insert("user_id".into(), json!(Self::legacy_id(u)));
        c.insert("multi_role_user_id".into(), json!(u.id));
        c.insert(
            "user_type".into(),
            json!(u.roles.first().cloned().unwrap_or_default()),
        );
        c.insert("district".into(), json!(u.org));
        if let Some(e) = &u.email {
            c.insert("email".into(), json!(e));
        }
        c.insert("given_name".into(), json!(u.given_name));
        c.insert("family_name".into(), json!(u.family_name));
        c
    }

    fn id_token(&self, u: &PortalUser, client_id: &str, nonce: Option<&str>) -> String {
        let t = crate::idp::now();
        let mut c = Self::oidc_claims(u);
        c.insert("iss".into(), json!(self.inner.base_url));
        c.insert("aud".into(), json!(client_id));
        c.insert("iat".into(), json!(t));
        c.insert("exp".into(), json!(t + 3600));
        if let Some(n) = nonce {
            c.insert("nonce".into(), json!(n));
        }
        self.core().sign(c)
    }
}

async fn authorize_get(
    State(idp): State<CleverIdp>,
    headers: axum::http::HeaderMap,
    Query(p): Query<HashMap<String, String>>,
) -> Response {
    idp.core().count("/oauth/authorize");
    idp.core().authorize_in_session(&p, &headers)
}

async fn authorize_post(
    State(idp): State<CleverIdp>,
    Form(p): Form<HashMap<String, String>>,
) -> Response {
    idp.core().count("/oauth/authorize");
    idp.core().authorize(&p)
}

/// Clever's token endpoint: Basic only, body credentials refused, JSON or form body.
async fn tokens(State(idp): State<CleverIdp>, headers: HeaderMap, body: Bytes) -> Response {
    let core = idp.core();
    core.count("/oauth/tokens");
    let p = body_params(&headers, &body);
    if p.contains_key("client_secret") {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "client credentials must be sent with HTTP Basic, not in the body",
        );
    }
    let Some((client_id, secret)) = basic_credentials(&headers) else {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "HTTP Basic client authentication required",
        );
    };
    let Some(client) = core.client(&client_id) else {
        return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", "unknown client");
    };
    if !secret_ok(client, &secret) {
        return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", "wrong secret");
    }
    if p.get("grant_type").map(String::as_str) != Some("authorization_code") {
        return oauth_error(StatusCode::BAD_REQUEST, "unsupported_grant_type", "");
    }
    let Some(redirect_uri) = p.get("redirect_uri") else {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "redirect_uri");
    };
    let grant = match core.redeem(
        p.get("code").map(String::as_str),
        &client_id,
        Some(redirect_uri),
    ) {
        Ok(g) => g,
        Err(e) => return oauth_error(StatusCode::BAD_REQUEST, e, "code invalid, expired or used"),
    };
    let access_token = core.issue_access_token(grant.user);
    let mut body = json!({"access_token": access_token, "token_type": "bearer"});
    if idp.inner.oidc_mode
        && let Some(u) = core.effective_user(grant.user)
    {
        body["id_token"] = json!(idp.id_token(&u, &client_id, grant.nonce.as_deref()));
    }
    ([(header::CACHE_CONTROL, "no-store")], Json(body)).into_response()
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, r#"Bearer error="invalid_token""#)],
    )
        .into_response()
}

async fn me(State(idp): State<CleverIdp>, headers: HeaderMap) -> Response {
    let core = idp.core();
    core.count("/v3.0/me");
    let Some(u) = core
        .bearer_user(&headers)
        .and_then(|i| core.effective_user(i))
    else {
        return unauthorized();
    };
    Json(json!({
        "type": "user",
        "data": {"id": u.id, "district": u.org, "type": "user", "authorized_by": "district"},
        "links": [
            {"rel": "self", "uri": "/me"},
            {"rel": "canonical", "uri": format!("/v3.0/users/{}", u.id)},
            {"rel": "district", "uri": format!("/v3.0/districts/{}", u.org)},
        ],
    }))
    .into_response()
}

async fn user(
    State(idp): State<CleverIdp>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let core = idp.core();
    core.count("/v3.0/users");
    let Some(u) = core
        .bearer_user(&headers)
        .and_then(|i| core.effective_user(i))
    else {
        return unauthorized();
    };
    if u.id != id {
        // An SSO token reads only its own user.
        return (StatusCode::NOT_FOUND, Json(json!({"message": "not found"}))).into_response();
    }
    let mut data = json!({
        "id": u.id,
        "district": u.org,
        "name": {"first": u.given_name, "middle": "", "last": u.family_name},
        "created": "2024-08-01T14:02:11.000Z",
        "last_modified": "2025-01-10T09:30:00.000Z",
        "roles": CleverIdp::roles_object(&u),
    });
    if let Some(e) = &u.email {
        data["email"] = json!(e);
    }
    Json(json!({"data": data, "links": [{"rel": "self", "uri": format!("/v3.0/users/{}", u.id)}]}))
        .into_response()
}

async fn userinfo(State(idp): State<CleverIdp>, headers: HeaderMap) -> Response {
    let core = idp.core();
    core.count("/userinfo");
    let Some(u) = core
        .bearer_user(&headers)
        .and_then(|i| core.effective_user(i))
    else {
        return unauthorized();
    };
    let mut c = CleverIdp::oidc_claims(&u);
    c.insert("district_id".into(), json!(u.org));
    c.insert(
        "name".into(),
        json!({"first": u.given_name, "last": u.family_name, "middle": ""}),
    );
    c.insert("schools".into(), json!(u.school.iter().collect::<Vec<_>>()));
    c.insert("email_verified".into(), json!(false));
    c.insert("authorized_by".into(), json!("district"));
    Json(Value::Object(c)).into_response()
}

async fn discovery(State(idp): State<CleverIdp>) -> Response {
    idp.core().count("/.well-known/openid-configuration");
    let base = &idp.inner.base_url;
    Json(json!({
        "issuer": base,
        "authorization_endpoint": format!("{base}/oauth/authorize"),
        "token_endpoint": format!("{base}/oauth/tokens"),
        "userinfo_endpoint": format!("{base}/userinfo"),
        "jwks_uri": format!("{base}/oauth/jwks"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic"],
    }))
    .into_response()
}

async fn jwks(State(idp): State<CleverIdp>) -> Response {
    idp.core().count("/oauth/jwks");
    Json(idp.core().jwks()).into_response()
}

async fn portal(State(idp): State<CleverIdp>) -> Response {
    idp.core().count("/portal");
    idp.core().portal_page("portal/launch")
}

async fn launch(
    State(idp): State<CleverIdp>,
    Query(p): Query<HashMap<String, String>>,
) -> Response {
    idp.core().count("/portal/launch");
    idp.core().launch(&p)
}

async fn set_tamper(State(idp): State<CleverIdp>, Json(t): Json<PortalTamper>) -> Response {
    idp.set_tamper(t);
    StatusCode::NO_CONTENT.into_response()
}
