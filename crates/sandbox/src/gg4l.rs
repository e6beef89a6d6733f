//! The emulated GG4L School Passport (providers.md §5), one tenant host.
//!
//! [`Gg4lIdp`] owns GG4L's wire formats and quirks on top of the shared portal core:
//!
//! | path | what |
//! | --- | --- |
//! | `GET /oauth/auth` | `response_type=code`, `client_id`, exact `redirect_uri`, optional `state`, `orgGuid`, `invalidate`; picker, or at once for a known `login_hint` |
//! | `POST /oauth/auth` | the picker's choice |
//! | `POST /oauth/token` | **HTTP Basic required**; `grant_type=authorization_code`, `code` (and `redirect_uri`, which must match when sent) in the query string or the form body; 60-second single-use codes; answers `access_token` = the signed `auth_token` JWT, `token_type`, `expires_in` 43200, `refresh_token`, `scope` |
//! | `GET /oauth/jwks` | the `auth_token` signing keys (the URL an admin configures) |
//! | `GET /passport`, `GET /passport/launch` | Passport: tiles redirect to the app's first redirect URI with `?code=` and no `state` |
//! | `POST /_sandbox/tamper` | sets the [`PortalTamper`] |
//!
//! The `auth_token` carries the union of GG4L's claim table and its sample (`iss`
//! `{base}/account`, `sub`, `aud`, `client_id`, `ctx`, `roles`, `type`, `district`,
//! `school`, `org_id`, `guid`, `username`, `scope`, `nbf`, `iat`, `exp` = `iat` + 1800,
//! `jti`) plus, as an assumption (not in GG4L's documented list), `email`, `given_name`
//! and `family_name`. Where the token sits in the token response, the JWKS path, the code
//! lifetime and Basic for the code grant are assumptions (providers.md Appendix).

use crate::keys::SandboxKeys;
use crate::portal::{
    CoreConfig, PortalCore, basic_credentials, body_params, oauth_error, secret_ok,
    serve_on_loopback,
};
use crate::users::PortalUser;
use crate::{PortalTamper, SandboxClient, SandboxError, ServerGuard};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Form, Json, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Map, json};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

/// The district named under [`PortalTamper::WrongDistrict`].
pub const GG4L_OTHER_DISTRICT_ID: &str = "ffffffff-2b3f-4a5e-8c9d-6f7a8b9c0d1e";
/// The `org_id` sent under [`PortalTamper::WrongDistrict`].
pub const GG4L_OTHER_ORG_ID: u64 = 999_999;

/// Everything a [`Gg4lIdp`] is made from.
#[derive(Debug, Clone)]
pub struct Gg4lIdpConfig {
    /// Base URL including any path prefix (stands for `https://sso.gg4l.com` or a
    /// tenant's own host). [`Gg4lIdp::bind_and_serve`] overwrites it with the bound
    /// address.
    pub base_url: String,
    /// Registered apps; the first redirect URI is the one Passport tiles use.
    pub clients: Vec<SandboxClient>,
    /// People (of any district).
    pub users: Vec<PortalUser>,
    /// Signs `auth_token`s.
    pub keys: SandboxKeys,
    /// Authorization-code lifetime, seconds (undocumented; 60).
    pub code_ttl_secs: u64,
}

impl Gg4lIdpConfig {
    /// A config with 60-second codes; `base_url` empty (set it, or let
    /// [`Gg4lIdp::bind_and_serve`] do it).
    pub fn new(clients: Vec<SandboxClient>, users: Vec<PortalUser>, keys: SandboxKeys) -> Self {
        Self {
            base_url: String::new(),
            clients,
            users,
            keys,
            code_ttl_secs: 60,
        }
    }
}

struct Inner {
    base_url: String,
    core: PortalCore,
}

/// The emulated GG4L Passport. Cloning shares the same state.
#[derive(Clone)]
pub struct Gg4lIdp {
    inner: Arc<Inner>,
}

impl Gg4lIdp {
    /// An emulator from its config (base URL as given).
    pub fn new(config: Gg4lIdpConfig) -> Self {
        let core = PortalCore::new(CoreConfig {
            clients: config.clients,
            users: config.users,
            keys: config.keys,
            code_ttl_secs: config.code_ttl_secs,
            other_org: GG4L_OTHER_DISTRICT_ID.to_owned(),
            portal_name: "GG4L Passport".into(),
        });
        Self {
            inner: Arc::new(Inner {
                base_url: config.base_url.trim_end_matches('/').to_owned(),
                core,
            }),
        }
    }

    /// Binds `127.0.0.1:0`, sets the base URL to `http://127.0.0.1:{port}` and serves the
    /// router at the root until the guard is dropped.
    pub async fn bind_and_serve(
        mut config: Gg4lIdpConfig,
    ) -> Result<(Gg4lIdp, SocketAddr, ServerGuard), SandboxError> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        config.base_url = format!("http://{}", listener.local_addr()?);
        let idp = Gg4lIdp::new(config);
        let (addr, guard) = serve_on_loopback(listener, idp.router()).await?;
        Ok((idp, addr, guard))
    }

    /// The base URL.
    pub fn base_url(&self) -> &str {
        &self.inner.base_url
    }

    /// The `iss` of its tokens: `{base_url}/account`.
    pub fn issuer(&self) -> String {
        format!("{}/account", self.inner.base_url)
    }

    /// The JWKS URL an admin would configure: `{base_url}/oauth/jwks`.
    pub fn jwks_url(&self) -> String {
        format!("{}/oauth/jwks", self.inner.base_url)
    }

    /// Sets the misbehaviour for the following requests.
    pub fn set_tamper(&self, tamper: PortalTamper) {
        self.inner.core.set_tamper(tamper);
    }

    /// How many requests reached `path` (`/oauth/token`, `/oauth/jwks`, `/oauth/auth`,
    /// `/passport/launch`, ...; without any prefix).
    pub fn requests(&self, path: &str) -> u64 {
        self.inner.core.requests(path)
    }

    /// The routes, relative to the router root.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/oauth/auth", get(authorize_get).post(authorize_post))
            .route("/oauth/token", post(token))
            .route("/oauth/jwks", get(jwks))
            .route("/passport", get(passport))
            .route("/passport/launch", get(launch))
            .route("/_sandbox/tamper", post(set_tamper))
            .with_state(self.clone())
    }

    fn core(&self) -> &PortalCore {
        &self.inner.core
    }

    fn auth_token(&self, u: &PortalUser, user_index: usize, client_id: &str) -> String {
        let t = crate::idp::now();
        let kind = u.roles.first().cloned().unwrap_or_default();
        let org_id = if u.org == GG4L_OTHER_DISTRICT_ID {
            Some(GG4L_OTHER_ORG_ID)
        } else {
            u.org_number
        };
        let mut c = Map::new();
        c.insert("iss".into(), json!(self.issuer()));
        c.insert("sub".into(), json!(format!("{}", 88000 + user_index)));
        c.insert("aud".into(), json!(client_id));
        c.insert("client_id".into(), json!(client_id));
        c.insert("ctx".into(), json!("personal"));
        c.insert("roles".into(), json!([kind.to_ascii_uppercase()]));
        c.insert("type".into(), json!(kind));
        c.insert("district".into(), json!(u.org));
        if let Some(s) = &u.school {
            c.insert("school".into(), json!(s));
        }
        if let Some(o) = org_id {
            c.insert("org_id".into(), json!(o));
        }
        c.insert("guid".into(), json!(u.id));
        if let Some(n) = &u.username {
            c.insert("username".into(), json!(n));
        }
        if let Some(e) = &u.email {
            c.insert("email".into(), json!(e));
        }
        c.insert("given_name".into(), json!(u.given_name));
        c.insert("family_name".into(), json!(u.family_name));
        c.insert("scope".into(), json!("profile"));
        c.insert("nbf".into(), json!(t));
        c.insert("iat".into(), json!(t));
        c.insert("exp".into(), json!(t + 1800));
        c.insert("jti".into(), json!(crate::idp::random(16)));
        self.core().sign(c)
    }
}

async fn authorize_get(
    State(idp): State<Gg4lIdp>,
    headers: axum::http::HeaderMap,
    Query(p): Query<HashMap<String, String>>,
) -> Response {
    idp.core().count("/oauth/auth");
    idp.core().authorize_in_session(&p, &headers)
}

async fn authorize_post(
    State(idp): State<Gg4lIdp>,
    Form(p): Form<HashMap<String, String>>,
) -> Response {
    idp.core().count("/oauth/auth");
    idp.core().authorize(&p)
}

/// GG4L's token endpoint: Basic required; parameters from the query (as documented) or
/// the form body.
async fn token(
    State(idp): State<Gg4lIdp>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let core = idp.core();
    core.count("/oauth/token");
    let mut p = query;
    p.extend(body_params(&headers, &body));
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
    let grant = match core.redeem(
        p.get("code").map(String::as_str),
        &client_id,
        p.get("redirect_uri").map(String::as_str),
    ) {
        Ok(g) => g,
        Err(e) => return oauth_error(StatusCode::BAD_REQUEST, e, "code invalid, expired or used"),
    };
    let Some(u) = core.effective_user(grant.user) else {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", "");
    };
    let token = idp.auth_token(&u, grant.user, &client_id);
    (
        [(header::CACHE_CONTROL, "no-store")],
        Json(json!({
            "access_token": token,
            "token_type": "bearer",
            "refresh_token": crate::idp::random(24),
            "expires_in": 43200,
            "scope": "profile",
        })),
    )
        .into_response()
}

async fn jwks(State(idp): State<Gg4lIdp>) -> Response {
    idp.core().count("/oauth/jwks");
    Json(idp.core().jwks()).into_response()
}

async fn passport(State(idp): State<Gg4lIdp>) -> Response {
    idp.core().count("/passport");
    idp.core().portal_page("passport/launch")
}

async fn launch(State(idp): State<Gg4lIdp>, Query(p): Query<HashMap<String, String>>) -> Response {
    idp.core().count("/passport/launch");
    idp.core().launch(&p)
}

async fn set_tamper(State(idp): State<Gg4lIdp>, Json(t): Json<PortalTamper>) -> Response {
    idp.set_tamper(t);
    StatusCode::NO_CONTENT.into_response()
}
