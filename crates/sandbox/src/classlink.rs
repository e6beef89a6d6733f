//! The emulated ClassLink (providers.md §4): LaunchPad's OAuth/OIDC host and the
//! `nodeapi` data host on one origin.
//!
//! [`ClassLinkIdp`] owns ClassLink's wire formats and quirks on top of the shared portal
//! core:
//!
//! | path | what |
//! | --- | --- |
//! | `GET /.well-known/openid-configuration`, `GET /oauth2/v2/jwks` | discovery (issuer = the base URL) and keys |
//! | `GET /oauth2/v2/auth` | `response_type=code`, `client_id`, exact `redirect_uri`, `scope`, optional `state`, `nonce`; picker, or at once for a known `login_hint` |
//! | `POST /oauth2/v2/auth` | the picker's choice |
//! | `POST /oauth2/v2/token` | form body with `code`, **`client_id`, `client_secret` in the body** (HTTP Basic is refused); `grant_type` optional; `redirect_uri` optional but must match when sent; 5-minute single-use codes; answer without `expires_in`, with `response_type: "code"` and an `id_token` (RS256, no `nbf`, no tenant id, `email_verified: true` even for synthetic emails) |
//! | `GET /v2/my/info` | numeric `TenantId` / `UserId`, `Role`, `SourcedId` (possibly empty), synthetic `Email`, `LoginId`, ... |
//! | `GET /launchpad`, `GET /launchpad/launch` | LaunchPad: tiles redirect to the app's first redirect URI with only `?code=` |
//! | `POST /_sandbox/tamper` | sets the [`PortalTamper`] |

use crate::keys::SandboxKeys;
use crate::portal::{
    CoreConfig, PortalCore, body_params, has_basic, oauth_error, secret_ok, serve_on_loopback,
};
use crate::users::PortalUser;
use crate::{PortalTamper, SandboxClient, SandboxError, ServerGuard};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Form, Json, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

/// The tenant named under [`PortalTamper::WrongDistrict`].
pub const CLASSLINK_OTHER_TENANT_ID: &str = "9999";

/// Everything a [`ClassLinkIdp`] is made from.
#[derive(Debug, Clone)]
pub struct ClassLinkIdpConfig {
    /// Base URL including any path prefix (stands for `https://launchpad.classlink.com`
    /// and `https://nodeapi.classlink.com`; the issuer).
    /// [`ClassLinkIdp::bind_and_serve`] overwrites it with the bound address.
    pub base_url: String,
    /// Registered apps; the first redirect URI is the one LaunchPad tiles use.
    pub clients: Vec<SandboxClient>,
    /// People (of any tenant).
    pub users: Vec<PortalUser>,
    /// Signs ID tokens.
    pub keys: SandboxKeys,
    /// Authorization-code lifetime, seconds (ClassLink: 300).
    pub code_ttl_secs: u64,
    /// The tenant's name (`Tenant`, and `address.locality` in ID tokens).
    pub tenant_name: String,
}

impl ClassLinkIdpConfig {
    /// A config with 5-minute codes; `base_url` empty (set it, or let
    /// [`ClassLinkIdp::bind_and_serve`] do it).
    pub fn new(clients: Vec<SandboxClient>, users: Vec<PortalUser>, keys: SandboxKeys) -> Self {
        Self {
            base_url: String::new(),
            clients,
            users,
            keys,
            code_ttl_secs: 300,
            tenant_name: "Demo District".into(),
        }
    }
}

struct Inner {
    base_url: String,
    tenant_name: String,
    core: PortalCore,
}

/// The emulated ClassLink. Cloning shares the same state.
#[derive(Clone)]
pub struct ClassLinkIdp {
    inner: Arc<Inner>,
}

/// A numeric id as a JSON number when it is one (ClassLink sends numbers).
fn number_or_string(s: &str) -> Value {
    s.parse::<u64>().map_or_else(|_| json!(s), |n| json!(n))
}

impl ClassLinkIdp {
    /// An emulator from its config (base URL as given).
    pub fn new(config: ClassLinkIdpConfig) -> Self {
        let core = PortalCore::new(CoreConfig {
            clients: config.clients,
            users: config.users,
            keys: config.keys,
            code_ttl_secs: config.code_ttl_secs,
            other_org: CLASSLINK_OTHER_TENANT_ID.to_owned(),
            portal_name: "ClassLink LaunchPad".into(),
        });
        Self {
            inner: Arc::new(Inner {
                base_url: config.base_url.trim_end_matches('/').to_owned(),
                tenant_name: config.tenant_name,
                core,
            }),
        }
    }

    /// Binds `127.0.0.1:0`, sets the base URL to `http://127.0.0.1:{port}` and serves the
    /// router at the root until the guard is dropped.
    pub async fn bind_and_serve(
        mut config: ClassLinkIdpConfig,
    ) -> Result<(ClassLinkIdp, SocketAddr, ServerGuard), SandboxError> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        config.base_url = format!("http://{}", listener.local_addr()?);
        let idp = ClassLinkIdp::new(config);
        let (addr, guard) = serve_on_loopback(listener, idp.router()).await?;
        Ok((idp, addr, guard))
    }

    /// The base URL (the issuer).
    pub fn base_url(&self) -> &str {
        &self.inner.base_url
    }

    /// Sets the misbehaviour for the following requests.
    pub fn set_tamper(&self, tamper: PortalTamper) {
        self.inner.core.set_tamper(tamper);
    }

    /// How many requests reached `path` (`/oauth2/v2/token`, `/v2/my/info`,
    /// `/oauth2/v2/jwks`, `/launchpad/launch`, ...; without any prefix).
    pub fn requests(&self, path: &str) -> u64 {
        self.inner.core.requests(path)
    }

    /// The routes, relative to the router root.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/oauth2/v2/jwks", get(jwks))
            .route("/oauth2/v2/auth", get(authorize_get).post(authorize_post))
            .route("/oauth2/v2/token", post(token))
            .route("/v2/my/info", get(my_info))
            .route("/launchpad", get(launchpad))
            .route("/launchpad/launch", get(launch))
            .route("/_sandbox/tamper", post(set_tamper))
            .with_state(self.clone())
    }

    fn core(&self) -> &PortalCore {
        &self.inner.core
    }

    fn role(u: &PortalUser) -> String {
        u.roles.first().cloned().unwrap_or_default()
    }

    fn id_token(&self, u: &PortalUser, client_id: &str, nonce: Option<&str>) -> String {
        let t = crate::idp::now();
        let mut c = Map::new();
        c.insert("iss".into(), json!(self.inner.base_url));
        c.insert("sub".into(), json!(u.id));
        c.insert("aud".into(), json!(client_id));
        if let Some(n) = nonce {
            c.insert("nonce".into(), json!(n));
        }
        c.insert("exp".into(), json!(t + 86400));
        c.insert("iat".into(), json!(t));
        c.insert("auth_time".into(), json!(t - 30));
        c.insert("login_hint".into(), json!(u.username));
        // ClassLink says "verified" even for synthetic addresses.
        c.insert("email_verified".into(), json!(true));
        if let Some(e) = &u.email {
            c.insert("email".into(), json!(e));
        }
        c.insert("name".into(), json!(u.display_name()));
        c.insert("profile".into(), json!(Self::role(u)));
        c.insert(
            "address".into(),
            json!({"locality": self.inner.tenant_name, "region": "Demo State"}),
        );
        c.insert("given_name".into(), json!(u.given_name));
        c.insert("family_name".into(), json!(u.family_name));
        self.core().sign(c)
    }
}

async fn discovery(State(idp): State<ClassLinkIdp>) -> Response {
    idp.core().count("/.well-known/openid-configuration");
    let base = &idp.inner.base_url;
    Json(json!({
        "issuer": base,
        "authorization_endpoint": format!("{base}/oauth2/v2/auth"),
        "token_endpoint": format!("{base}/oauth2/v2/token"),
        "jwks_uri": format!("{base}/oauth2/v2/jwks"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "scopes_supported": ["openid", "profile", "email", "oneroster", "full"],
        "token_endpoint_auth_methods_supported": ["client_secret_post"],
    }))
    .into_response()
}

async fn jwks(State(idp): State<ClassLinkIdp>) -> Response {
    idp.core().count("/oauth2/v2/jwks");
    Json(idp.core().jwks()).into_response()
}

async fn authorize_get(
    State(idp): State<ClassLinkIdp>,
    headers: axum::http::HeaderMap,
    Query(p): Query<HashMap<String, String>>,
) -> Response {
    idp.core().count("/oauth2/v2/auth");
    idp.core().authorize_in_session(&p, &headers)
}

async fn authorize_post(
    State(idp): State<ClassLinkIdp>,
    Form(p): Form<HashMap<String, String>>,
) -> Response {
    idp.core().count("/oauth2/v2/auth");
    idp.core().authorize(&p)
}

/// ClassLink's token endpoint: credentials in the form body only.
async fn token(State(idp): State<ClassLinkIdp>, headers: HeaderMap, body: Bytes) -> Response {
    let core = idp.core();
    core.count("/oauth2/v2/token");
    if has_basic(&headers) {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "send client_id and client_secret in the form body",
        );
    }
    let p = body_params(&headers, &body);
    let (Some(client_id), Some(secret)) = (p.get("client_id"), p.get("client_secret")) else {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "client_id and client_secret are required in the body",
        );
    };
    let Some(client) = core.client(client_id) else {
        return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", "unknown client");
    };
    if !secret_ok(client, secret) {
        return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", "wrong secret");
    }
    if p.get("grant_type")
        .is_some_and(|g| g != "authorization_code")
    {
        return oauth_error(StatusCode::BAD_REQUEST, "unsupported_grant_type", "");
    }
    let grant = match core.redeem(
        p.get("code").map(String::as_str),
        client_id,
        p.get("redirect_uri").map(String::as_str),
    ) {
        Ok(g) => g,
        Err(e) => return oauth_error(StatusCode::BAD_REQUEST, e, "code invalid, expired or used"),
    };
    let Some(u) = core.effective_user(grant.user) else {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", "");
    };
    let access_token = core.issue_access_token(grant.user);
    let id_token = idp.id_token(&u, client_id, grant.nonce.as_deref());
    (
        [(header::CACHE_CONTROL, "no-store")],
        Json(json!({
            "access_token": access_token,
            "token_type": "Bearer",
            "response_type": "code",
            "id_token": id_token,
        })),
    )
        .into_response()
}

async fn my_info(State(idp): State<ClassLinkIdp>, headers: HeaderMap) -> Response {
    let core = idp.core();
    core.count("/v2/my/info");
    let Some(u) = core
        .bearer_user(&headers)
        .and_then(|i| core.effective_user(i))
    else {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "invalid_token"})),
        )
            .into_response();
    };
    let role = ClassLinkIdp::role(&u);
    Json(json!({
        "UserId": number_or_string(&u.id),
        "TenantId": number_or_string(&u.org),
        "StateId": 31,
        "StateName": "Demo State",
        "BuildingId": u.school.as_deref().map(number_or_string),
        "AuthenticationType": 2,
        "DisplayName": u.display_name(),
        "FirstName": u.given_name,
        "LastName": u.family_name,
        "Email": u.email.clone().unwrap_or_default(),
        "LoginId": u.username.clone().unwrap_or_default(),
        "ImagePath": "",
        "LanguageId": 1,
        "Language": "en",
        "DefaultTimeFormat": 0,
        "Profile": format!("{role}s"),
        "ProfileId": 55120,
        "Tenant": idp.inner.tenant_name,
        "Building": "Demo Middle School",
        "Role": role,
        "Role_Level": 4,
        "LastAccessTime": "2025-02-03T13:45:10.000Z",
        "OrgId": "",
        "SourcedId": u.sourced_id.clone().unwrap_or_default(),
    }))
    .into_response()
}

async fn launchpad(State(idp): State<ClassLinkIdp>) -> Response {
    idp.core().count("/launchpad");
    idp.core().portal_page("launchpad/launch")
}

async fn launch(
    State(idp): State<ClassLinkIdp>,
    Query(p): Query<HashMap<String, String>>,
) -> Response {
    idp.core().count("/launchpad/launch");
    idp.core().launch(&p)
}

async fn set_tamper(State(idp): State<ClassLinkIdp>, Json(t): Json<PortalTamper>) -> Response {
    idp.set_tamper(t);
    StatusCode::NO_CONTENT.into_response()
}
