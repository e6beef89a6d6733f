//! The emulated OpenID Connect IdP ("Demo District sign-in").
//!
//! [`OidcIdp`] owns its clients, users, signing key, the issued authorization codes and
//! access tokens (in memory), the active [`Tamper`] and per-path request counters. Its
//! [`OidcIdp::router`] serves, relative to the router root (so it can be nested under a
//! path prefix or served at a port's root):
//!
//! | path | what |
//! | --- | --- |
//! | `GET /.well-known/openid-configuration` | discovery |
//! | `GET /jwks` | the public keys |
//! | `GET /authorize` | validates the request, renders the user picker (or answers at once for a matching `login_hint`) |
//! | `POST /authorize` | the chosen user: 302 back with `code`, `state`, `iss` |
//! | `POST /token` | code exchange (`client_secret_basic` or `_post`, PKCE S256, single-use 60 s codes) |
//! | `GET /userinfo` | claims for a Bearer access token |
//! | `POST /_sandbox/tamper` | sets the [`Tamper`] from JSON (tests in other processes) |
//!
//! The Entra flavour serves the same endpoints under `/{tenant}/v2.0/` (any tenant segment:
//! a GUID, a domain, `organizations`, `common`), its `issuer` config is the authority base,
//! and tokens name `{authority}/{tid}/v2.0`. It never talks to the network beyond its own
//! listener.

use crate::SandboxError;
use crate::keys::SandboxKeys;
use crate::users::SandboxUser;
use axum::Router;
use axum::extract::{Form, Json, Query, RawPathParams, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

/// Which upstream the IdP imitates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Flavour {
    /// A plain OIDC provider.
    Generic,
    /// Google: adds `hd` for users that have one.
    Google,
    /// Entra v2.0: endpoints under `/{tenant}/v2.0`, `tid`/`oid`/`ver`/`xms_edov`/
    /// `preferred_username`, issuer per tenant, no `email_verified`, no callback `iss`.
    Microsoft {
        /// The tenant users belong to unless they name their own `tid`.
        tenant_id: String,
    },
}

/// A client registered at the IdP.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SandboxClient {
    /// `client_id`.
    pub client_id: String,
    /// `client_secret` (accepted by Basic or in the form).
    pub client_secret: String,
    /// Redirect URIs, matched exactly.
    pub redirect_uris: Vec<String>,
}

/// Everything an [`OidcIdp`] is made from.
#[derive(Debug, Clone)]
pub struct OidcIdpConfig {
    /// Full issuer URL including any path prefix (e.g. `http://127.0.0.1:8080/sandbox/demo`);
    /// for the Entra flavour, the authority base (e.g. `http://127.0.0.1:8080`).
    /// [`OidcIdp::bind_and_serve`] overwrites it with the bound address.
    pub issuer: String,
    /// What the IdP imitates.
    pub flavour: Flavour,
    /// Registered clients.
    pub clients: Vec<SandboxClient>,
    /// Accounts.
    pub users: Vec<SandboxUser>,
    /// The signing key.
    pub keys: SandboxKeys,
    /// Authorization-code lifetime, seconds (60).
    pub code_ttl_secs: u64,
}

impl OidcIdpConfig {
    /// A config with the given flavour, clients, users and key; `issuer` empty (set it,
    /// or let [`OidcIdp::bind_and_serve`] do it), codes valid 60 s.
    pub fn new(
        flavour: Flavour,
        clients: Vec<SandboxClient>,
        users: Vec<SandboxUser>,
        keys: SandboxKeys,
    ) -> Self {
        Self {
            issuer: String::new(),
            flavour,
            clients,
            users,
            keys,
            code_ttl_secs: 60,
        }
    }
}

/// A misbehaviour to inject into the next responses (test knob).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "tamper", rename_all = "snake_case")]
pub enum Tamper {
    /// Behave.
    #[default]
    None,
    /// ID token `iss` of another IdP (`http://127.0.0.1:9401`).
    WrongIssuer,
    /// ID token `aud` (and `azp`) of another client.
    WrongAudience,
    /// `aud` = [client, other] and no `azp`.
    ExtraAudienceNoAzp,
    /// One payload claim changed after signing.
    BadSignature,
    /// `alg: none`, empty signature.
    AlgNone,
    /// HS256 with the client's secret as key.
    Hs256WithClientSecret,
    /// Signed with a second key whose `kid` is published in JWKS only after the token
    /// was issued (tests the JWKS re-fetch).
    UnknownKid,
    /// No `nonce`.
    NoNonce,
    /// Another `nonce`.
    WrongNonce,
    /// `exp` ten minutes ago.
    Expired,
    /// No `sub`.
    MissingSub,
    /// Userinfo answers with another `sub`.
    UserinfoSubMismatch,
    /// Token endpoint answers 400 `invalid_grant`.
    TokenEndpointError,
    /// Token endpoint sleeps this long first.
    SlowToken {
        /// Seconds to sleep.
        secs: u64,
    },
    /// Token endpoint answers 200 with a 4 MiB body.
    HugeTokenResponse,
}

#[derive(Debug, Clone)]
struct Grant {
    client_id: String,
    redirect_uri: String,
    user: usize,
    nonce: Option<String>,
    challenge: Option<String>,
    created: i64,
}

#[derive(Default)]
struct IdpState {
    codes: HashMap<String, Grant>,
    tokens: HashMap<String, usize>,
    tamper: Tamper,
    counters: HashMap<String, u64>,
    /// The second key of [`Tamper::UnknownKid`] and whether JWKS shows it yet.
    extra_key: Option<SandboxKeys>,
    publish_extra: bool,
}

struct Inner {
    config: OidcIdpConfig,
    /// `sub` -> index in `config.users`, and lower-cased email -> index (first wins, as the
    /// linear scan did): a `login_hint` is two lookups, not a scan of the whole school.
    by_sub: std::collections::HashMap<String, usize>,
    by_email: std::collections::HashMap<String, usize>,
    /// Short critical sections only; never held across an `.await`.
    state: Mutex<IdpState>,
}

/// The emulated IdP. Cloning shares the same state.
#[derive(Clone)]
pub struct OidcIdp {
    inner: Arc<Inner>,
}

/// An index of the users by `key`, the first user winning a shared key.
fn index_by(
    users: &[SandboxUser],
    key: impl Fn(&SandboxUser) -> String,
) -> std::collections::HashMap<String, usize> {
    let mut m = std::collections::HashMap::with_capacity(users.len());
    for (i, u) in users.iter().enumerate() {
        m.entry(key(u)).or_insert(i);
    }
    m
}

/// Stops the served IdP when dropped.
#[derive(Debug)]
pub struct ServerGuard {
    pub(crate) handle: tokio::task::JoinHandle<()>,
}

impl Drop for ServerGuard {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

pub(crate) fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

pub(crate) fn random(bytes: usize) -> String {
    homeroom_core::crypto::random_token(bytes).unwrap_or_else(|_| format!("fallback-{}", now()))
}

pub(crate) fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

pub(crate) fn json_error(status: StatusCode, error: &str) -> Response {
    (status, Json(json!({"error": error}))).into_response()
}

pub(crate) fn redirect(location: &str) -> Response {
    (StatusCode::FOUND, [(header::LOCATION, location.to_owned())]).into_response()
}

pub(crate) fn bad_request_page(msg: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Html(format!(
            "<!doctype html><title>Error</title><p>{}</p>",
            html_escape(msg)
        )),
    )
        .into_response()
}

fn tenant_segment(
    params: &Result<RawPathParams, axum::extract::rejection::RawPathParamsRejection>,
) -> Option<String> {
    params.as_ref().ok().and_then(|p| {
        p.iter()
            .find(|(k, _)| *k == "tenant")
            .map(|(_, v)| v.to_owned())
    })
}

type Params = Result<RawPathParams, axum::extract::rejection::RawPathParamsRejection>;

impl OidcIdp {
    /// An IdP from its config (issuer as given).
    pub fn new(config: OidcIdpConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                by_sub: index_by(&config.users, |u| u.sub.clone()),
                by_email: index_by(&config.users, |u| u.email.to_ascii_lowercase()),
                config,
                state: Mutex::new(IdpState::default()),
            }),
        }
    }

    /// Binds `127.0.0.1:0`, sets the issuer to `http://127.0.0.1:{port}` and serves the
    /// router at the root until the guard is dropped.
    pub async fn bind_and_serve(
        mut config: OidcIdpConfig,
    ) -> Result<(OidcIdp, SocketAddr, ServerGuard), SandboxError> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        config.issuer = format!("http://{addr}");
        let idp = OidcIdp::new(config);
        let app = idp.router();
        let handle = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::warn!(error = %e, "sandbox IdP stopped");
            }
        });
        Ok((idp, addr, ServerGuard { handle }))
    }

    /// The configured issuer (for Entra, the authority base).
    pub fn issuer(&self) -> &str {
        &self.inner.config.issuer
    }

    /// The config this IdP was built from.
    pub fn config(&self) -> &OidcIdpConfig {
        &self.inner.config
    }

    fn state(&self) -> std::sync::MutexGuard<'_, IdpState> {
        // A poisoned lock only means a test panicked mid-request; the data is still usable.
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets the misbehaviour for the following requests. [`Tamper::UnknownKid`] generates
    /// its second key here (blocking, a few hundred ms).
    pub fn set_tamper(&self, tamper: Tamper) {
        let needs_key = tamper == Tamper::UnknownKid && self.state().extra_key.is_none();
        let key = if needs_key {
            SandboxKeys::generate().ok()
        } else {
            None
        };
        let mut st = self.state();
        if let Some(k) = key {
            st.extra_key = Some(k);
            st.publish_extra = false;
        }
        st.tamper = tamper;
    }

    /// How many requests reached `path` (`/token`, `/jwks`, `/authorize`, `/userinfo`,
    /// `/.well-known/openid-configuration`; without any prefix).
    pub fn requests(&self, path: &str) -> u64 {
        self.state().counters.get(path).copied().unwrap_or(0)
    }

    fn count(&self, path: &str) {
        *self.state().counters.entry(path.to_owned()).or_default() += 1;
    }

    /// The routes, relative to the router root.
    pub fn router(&self) -> Router {
        let prefix = match self.inner.config.flavour {
            Flavour::Microsoft { .. } => "/{tenant}/v2.0",
            _ => "",
        };
        Router::new()
            .route(
                &format!("{prefix}/.well-known/openid-configuration"),
                get(discovery),
            )
            .route(&format!("{prefix}/jwks"), get(jwks))
            .route(
                &format!("{prefix}/authorize"),
                get(authorize_get).post(authorize_post),
            )
            .route(&format!("{prefix}/token"), post(token))
            .route(&format!("{prefix}/userinfo"), get(userinfo))
            .route("/_sandbox/tamper", post(set_tamper))
            .with_state(self.clone())
    }

    /// Base URL of the endpoints for a request (Entra: includes the tenant segment).
    fn endpoint_base(&self, tenant: Option<&str>) -> String {
        let issuer = self.inner.config.issuer.trim_end_matches('/');
        match (&self.inner.config.flavour, tenant) {
            (Flavour::Microsoft { .. }, Some(t)) => format!("{issuer}/{t}/v2.0"),
            _ => issuer.to_owned(),
        }
    }

    /// The `iss` of tokens for `user`.
    fn token_issuer(&self, user: &SandboxUser) -> String {
        let issuer = self.inner.config.issuer.trim_end_matches('/');
        match &self.inner.config.flavour {
            Flavour::Microsoft { tenant_id } => {
                format!("{issuer}/{}/v2.0", user.tid.as_deref().unwrap_or(tenant_id))
            }
            _ => issuer.to_owned(),
        }
    }

    fn client(&self, client_id: &str) -> Option<&SandboxClient> {
        self.inner
            .config
            .clients
            .iter()
            .find(|c| c.client_id == client_id)
    }

    fn user_index(&self, hint: &str) -> Option<usize> {
        let by_sub = self.inner.by_sub.get(hint).copied();
        let by_email = self.inner.by_email.get(&hint.to_ascii_lowercase()).copied();
        // The sub matches exactly, the email in any case; the earlier user wins.
        match (by_sub, by_email) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn claims_for(
        &self,
        user: &SandboxUser,
        client_id: &str,
        nonce: Option<&str>,
    ) -> Map<String, Value> {
        let t = now();
        let mut c = Map::new();
        c.insert("iss".into(), json!(self.token_issuer(user)));
        c.insert("aud".into(), json!(client_id));
        c.insert("azp".into(), json!(client_id));
        c.insert("sub".into(), json!(user.sub));
        if let Some(n) = nonce {
            c.insert("nonce".into(), json!(n));
        }
        c.insert("iat".into(), json!(t));
        c.insert("exp".into(), json!(t + 3600));
        c.insert("auth_time".into(), json!(t));
        c.insert("email".into(), json!(user.email));
        c.insert("name".into(), json!(user.name));
        c.insert("given_name".into(), json!(user.given_name));
        c.insert("family_name".into(), json!(user.family_name));
        match &self.inner.config.flavour {
            Flavour::Generic => {
                c.insert("email_verified".into(), json!(user.email_verified));
                c.insert("role".into(), json!(user.role));
            }
            Flavour::Google => {
                c.insert("email_verified".into(), json!(user.email_verified));
                if let Some(hd) = &user.hd {
                    c.insert("hd".into(), json!(hd));
                }
            }
            Flavour::Microsoft { tenant_id } => {
                c.insert(
                    "tid".into(),
                    json!(user.tid.as_deref().unwrap_or(tenant_id)),
                );
                if let Some(oid) = &user.oid {
                    c.insert("oid".into(), json!(oid));
                }
                c.insert("ver".into(), json!("2.0"));
                c.insert("preferred_username".into(), json!(user.email));
                c.insert("nbf".into(), json!(t));
                if let Some(v) = &user.xms_edov {
                    c.insert("xms_edov".into(), v.clone());
                }
            }
        }
        c
    }

    fn sign(&self, claims: &Map<String, Value>, key: &SandboxKeys) -> String {
        key.sign_rs256(Some("JWT"), claims).unwrap_or_default()
    }

    /// Mints an ID token for a redeemed grant, applying the current tamper.
    fn id_token(&self, grant: &Grant, client: &SandboxClient, tamper: &Tamper) -> String {
        let Some(user) = self.inner.config.users.get(grant.user) else {
            return String::new();
        };
        let mut c = self.claims_for(user, &client.client_id, grant.nonce.as_deref());
        let t = now();
        match tamper {
            Tamper::WrongIssuer => {
                c.insert("iss".into(), json!("http://127.0.0.1:9401"));
            }
            Tamper::WrongAudience => {
                c.insert("aud".into(), json!("other-client"));
                c.insert("azp".into(), json!("other-client"));
            }
            Tamper::ExtraAudienceNoAzp => {
                c.insert("aud".into(), json!([client.client_id, "other-client"]));
                c.remove("azp");
            }
            Tamper::NoNonce => {
                c.remove("nonce");
            }
            Tamper::WrongNonce => {
                c.insert("nonce".into(), json!("not-the-nonce-we-were-sent"));
            }
            Tamper::Expired => {
                c.insert("iat".into(), json!(t - 4200));
                c.insert("auth_time".into(), json!(t - 4200));
                c.insert("exp".into(), json!(t - 600));
                c.remove("nbf");
            }
            Tamper::MissingSub => {
                c.remove("sub");
            }
            _ => {}
        }
        match tamper {
            Tamper::AlgNone => {
                let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
                let payload = URL_SAFE_NO_PAD.encode(Value::Object(c).to_string());
                format!("{header}.{payload}.")
            }
            Tamper::Hs256WithClientSecret => {
                let mut h = Header::new(Algorithm::HS256);
                h.kid = Some(self.inner.config.keys.kid().to_owned());
                let key = EncodingKey::from_secret(client.client_secret.as_bytes());
                jsonwebtoken::encode(&h, &c, &key).unwrap_or_default()
            }
            Tamper::UnknownKid => {
                let extra = self.state().extra_key.clone();
                match extra {
                    Some(k) => self.sign(&c, &k),
                    None => self.sign(&c, &self.inner.config.keys),
                }
            }
            Tamper::BadSignature => {
                let signed = self.sign(&c, &self.inner.config.keys);
                let sig = signed.rsplit('.').next().unwrap_or_default().to_owned();
                let header = signed.split('.').next().unwrap_or_default().to_owned();
                c.insert("name".into(), json!(format!("{}x", user.name)));
                let payload = URL_SAFE_NO_PAD.encode(Value::Object(c).to_string());
                format!("{header}.{payload}.{sig}")
            }
            _ => self.sign(&c, &self.inner.config.keys),
        }
    }

    /// Validates an authorization request (client, exact redirect URI); `Err` is the page.
    fn check_request(&self, p: &HashMap<String, String>) -> Result<(), Box<Response>> {
        let client_id = p.get("client_id").map(String::as_str).unwrap_or("");
        let Some(client) = self.client(client_id) else {
            return Err(Box::new(bad_request_page("Unknown client_id.")));
        };
        let redirect_uri = p.get("redirect_uri").map(String::as_str).unwrap_or("");
        if !client.redirect_uris.iter().any(|r| r == redirect_uri) {
            return Err(Box::new(bad_request_page(
                "redirect_uri is not registered for this client.",
            )));
        }
        Ok(())
    }

    fn error_redirect(&self, p: &HashMap<String, String>, error: &str) -> Response {
        let mut url = p.get("redirect_uri").cloned().unwrap_or_default();
        url.push(if url.contains('?') { '&' } else { '?' });
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        q.append_pair("error", error);
        if let Some(s) = p.get("state") {
            q.append_pair("state", s);
        }
        url.push_str(&q.finish());
        redirect(&url)
    }

    /// Issues a code for `user` and redirects back with `code`, `state` and `iss`.
    fn issue_code(
        &self,
        p: &HashMap<String, String>,
        user: usize,
        tenant: Option<&str>,
    ) -> Response {
        let code = random(24);
        let grant = Grant {
            client_id: p.get("client_id").cloned().unwrap_or_default(),
            redirect_uri: p.get("redirect_uri").cloned().unwrap_or_default(),
            user,
            nonce: p.get("nonce").cloned(),
            challenge: p.get("code_challenge").cloned(),
            created: now(),
        };
        self.state().codes.insert(code.clone(), grant);
        let mut url = p.get("redirect_uri").cloned().unwrap_or_default();
        url.push(if url.contains('?') { '&' } else { '?' });
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        q.append_pair("code", &code);
        if let Some(s) = p.get("state") {
            q.append_pair("state", s);
        }
        // RFC 9207; Entra does not send it.
        if !matches!(self.inner.config.flavour, Flavour::Microsoft { .. }) {
            q.append_pair("iss", &self.endpoint_base(tenant));
        }
        url.push_str(&q.finish());
        redirect(&url)
    }

    fn picker_page(&self, p: &HashMap<String, String>) -> Response {
        let hidden: String = [
            "client_id",
            "redirect_uri",
            "response_type",
            "scope",
            "state",
            "nonce",
            "code_challenge",
            "code_challenge_method",
        ]
        .iter()
        .filter_map(|k| p.get(*k).map(|v| (k, v)))
        .map(|(k, v)| {
            format!(
                r#"<input type="hidden" name="{k}" value="{}">"#,
                html_escape(v)
            )
        })
        .collect();
        let buttons: String = self
            .inner
            .config
            .users
            .iter()
            .map(|u| {
                format!(
                    r#"<li><form method="post">{hidden}<button type="submit" name="user" value="{}"><span class="name">{}</span> <span class="role">{}</span><br><span class="email">{}</span></button></form></li>"#,
                    html_escape(&u.sub),
                    html_escape(&u.name),
                    html_escape(&u.role),
                    html_escape(&u.email)
                )
            })
            .collect();
        let page = format!(
            r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Demo District sign-in</title>
<style>body{{font-family:system-ui,sans-serif;max-width:32rem;margin:2rem auto;padding:0 1rem}}
ul{{list-style:none;padding:0}}li{{margin:.75rem 0}}button{{width:100%;padding:1rem;font-size:1.2rem;text-align:left;border:2px solid #1a4d8f;border-radius:.5rem;background:#fff;cursor:pointer}}
button:focus,button:hover{{background:#e8f0fb;outline:3px solid #1a4d8f}}.role{{color:#555;font-size:1rem}}.email{{color:#333;font-size:.95rem}}</style></head>
<body><main><h1>Demo District sign-in</h1><p>This is a practice sign-in page. Choose who you are.</p>
<ul>{buttons}</ul></main></body></html>"#
        );
        (
            [
                (header::CACHE_CONTROL, "no-store"),
                (header::CONTENT_SECURITY_POLICY, "frame-ancestors 'none'"),
            ],
            Html(page),
        )
            .into_response()
    }
}

async fn discovery(State(idp): State<OidcIdp>, params: Params) -> Response {
    idp.count("/.well-known/openid-configuration");
    let tenant = tenant_segment(&params);
    let base = idp.endpoint_base(tenant.as_deref());
    let issuer = match (&idp.inner.config.flavour, tenant.as_deref()) {
        (Flavour::Microsoft { .. }, Some(t)) if t.len() == 36 && t.matches('-').count() == 4 => {
            base.clone()
        }
        (Flavour::Microsoft { .. }, _) => {
            format!(
                "{}/{{tenantid}}/v2.0",
                idp.inner.config.issuer.trim_end_matches('/')
            )
        }
        _ => base.clone(),
    };
    Json(json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{base}/authorize"),
        "token_endpoint": format!("{base}/token"),
        "userinfo_endpoint": format!("{base}/userinfo"),
        "jwks_uri": format!("{base}/jwks"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "scopes_supported": ["openid", "email", "profile"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "code_challenge_methods_supported": ["S256"],
        "grant_types_supported": ["authorization_code"],
        "authorization_response_iss_parameter_supported": !matches!(idp.inner.config.flavour, Flavour::Microsoft { .. }),
        "claims_supported": ["sub", "iss", "aud", "email", "email_verified", "name", "given_name", "family_name", "hd", "tid", "oid"],
    }))
    .into_response()
}

async fn jwks(State(idp): State<OidcIdp>) -> Response {
    idp.count("/jwks");
    let mut keys = vec![idp.inner.config.keys.public_jwk()];
    {
        let st = idp.state();
        if st.publish_extra
            && let Some(k) = &st.extra_key
        {
            keys.push(k.public_jwk());
        }
    }
    Json(json!({ "keys": keys })).into_response()
}

async fn authorize_get(
    State(idp): State<OidcIdp>,
    params: Params,
    Query(p): Query<HashMap<String, String>>,
) -> Response {
    idp.count("/authorize");
    if let Err(page) = idp.check_request(&p) {
        return *page;
    }
    if p.get("response_type").map(String::as_str) != Some("code") {
        return idp.error_redirect(&p, "unsupported_response_type");
    }
    let prompt = p.get("prompt").map(String::as_str).unwrap_or("");
    let forces_ui = prompt
        .split(' ')
        .any(|v| v == "login" || v == "select_account");
    let hinted = p.get("login_hint").and_then(|h| idp.user_index(h));
    match hinted {
        Some(user) if !forces_ui => idp.issue_code(&p, user, tenant_segment(&params).as_deref()),
        _ if prompt == "none" => idp.error_redirect(&p, "login_required"),
        _ => idp.picker_page(&p),
    }
}

async fn authorize_post(
    State(idp): State<OidcIdp>,
    params: Params,
    Form(p): Form<HashMap<String, String>>,
) -> Response {
    idp.count("/authorize");
    if let Err(page) = idp.check_request(&p) {
        return *page;
    }
    if p.get("response_type").map(String::as_str) != Some("code") {
        return idp.error_redirect(&p, "unsupported_response_type");
    }
    match p.get("user").and_then(|u| idp.user_index(u)) {
        Some(user) => idp.issue_code(&p, user, tenant_segment(&params).as_deref()),
        None => bad_request_page("Unknown user."),
    }
}

/// Client credentials from `Authorization: Basic` (form-urlencoded parts) or the form.
fn client_credentials(
    headers: &HeaderMap,
    form: &HashMap<String, String>,
) -> Option<(String, String)> {
    if let Some(v) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        && let Some(b64) = v.strip_prefix("Basic ")
    {
        let decoded = String::from_utf8(STANDARD.decode(b64.trim()).ok()?).ok()?;
        let (id, secret) = decoded.split_once(':')?;
        let dec = |s: &str| {
            url::form_urlencoded::parse(format!("x={s}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
        };
        return Some((dec(id)?, dec(secret)?));
    }
    Some((
        form.get("client_id")?.clone(),
        form.get("client_secret")?.clone(),
    ))
}

async fn token(
    State(idp): State<OidcIdp>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    idp.count("/token");
    let tamper = idp.state().tamper.clone();
    match &tamper {
        Tamper::SlowToken { secs } => {
            tokio::time::sleep(std::time::Duration::from_secs(*secs)).await
        }
        Tamper::TokenEndpointError => return json_error(StatusCode::BAD_REQUEST, "invalid_grant"),
        Tamper::HugeTokenResponse => {
            let padding = "x".repeat(4 * 1024 * 1024);
            return Json(json!({"access_token": padding, "token_type": "Bearer"})).into_response();
        }
        _ => {}
    }
    let Some((client_id, secret)) = client_credentials(&headers, &form) else {
        return json_error(StatusCode::UNAUTHORIZED, "invalid_client");
    };
    let Some(client) = idp.client(&client_id).cloned() else {
        return json_error(StatusCode::UNAUTHORIZED, "invalid_client");
    };
    if !homeroom_core::crypto::ct_eq(secret.as_bytes(), client.client_secret.as_bytes()) {
        return json_error(StatusCode::UNAUTHORIZED, "invalid_client");
    }
    if form.get("grant_type").map(String::as_str) != Some("authorization_code") {
        return json_error(StatusCode::BAD_REQUEST, "unsupported_grant_type");
    }
    // Single use: the code is removed whatever happens next.
    let grant = form.get("code").and_then(|c| idp.state().codes.remove(c));
    let Some(grant) = grant else {
        return json_error(StatusCode::BAD_REQUEST, "invalid_grant");
    };
    let ttl = i64::try_from(idp.inner.config.code_ttl_secs).unwrap_or(60);
    if now() - grant.created > ttl
        || grant.client_id != client.client_id
        || form.get("redirect_uri") != Some(&grant.redirect_uri)
    {
        return json_error(StatusCode::BAD_REQUEST, "invalid_grant");
    }
    if let Some(challenge) = &grant.challenge {
        let ok = form
            .get("code_verifier")
            .is_some_and(|v| homeroom_core::crypto::pkce_s256(v) == *challenge);
        if !ok {
            return json_error(StatusCode::BAD_REQUEST, "invalid_grant");
        }
    }
    let id_token = idp.id_token(&grant, &client, &tamper);
    let access_token = random(32);
    {
        let mut st = idp.state();
        st.tokens.insert(access_token.clone(), grant.user);
        if tamper == Tamper::UnknownKid {
            st.publish_extra = true;
        }
    }
    (
        [(header::CACHE_CONTROL, "no-store")],
        Json(json!({
            "access_token": access_token,
            "token_type": "Bearer",
            "expires_in": 3600,
            "scope": "openid email profile",
            "id_token": id_token,
        })),
    )
        .into_response()
}

async fn userinfo(State(idp): State<OidcIdp>, headers: HeaderMap) -> Response {
    idp.count("/userinfo");
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    let (user, tamper) = {
        let st = idp.state();
        (
            token.and_then(|t| st.tokens.get(&t).copied()),
            st.tamper.clone(),
        )
    };
    let Some(user) = user.and_then(|i| idp.inner.config.users.get(i)) else {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, r#"Bearer error="invalid_token""#)],
        )
            .into_response();
    };
    let mut c = idp.claims_for(user, "", None);
    for k in [
        "iss",
        "aud",
        "azp",
        "iat",
        "exp",
        "auth_time",
        "nbf",
        "nonce",
    ] {
        c.remove(k);
    }
    if tamper == Tamper::UserinfoSubMismatch {
        c.insert("sub".into(), json!("somebody-else"));
    }
    Json(Value::Object(c)).into_response()
}

async fn set_tamper(State(idp): State<OidcIdp>, Json(t): Json<Tamper>) -> Response {
    // Key generation for UnknownKid blocks; keep it off the async workers.
    let idp2 = idp.clone();
    match tokio::task::spawn_blocking(move || idp2.set_tamper(t)).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::users::demo_district_users;

    const CB: &str = "http://127.0.0.1:1/cb";

    fn keys() -> SandboxKeys {
        static KEYS: std::sync::OnceLock<SandboxKeys> = std::sync::OnceLock::new();
        KEYS.get_or_init(|| SandboxKeys::generate().unwrap())
            .clone()
    }

    async fn start() -> (OidcIdp, String, ServerGuard) {
        let client = SandboxClient {
            client_id: "homeroom".into(),
            client_secret: "s3cret".into(),
            redirect_uris: vec![CB.into()],
        };
        let config = OidcIdpConfig::new(
            Flavour::Generic,
            vec![client],
            demo_district_users(),
            keys(),
        );
        let (idp, addr, guard) = OidcIdp::bind_and_serve(config).await.unwrap();
        (idp, format!("http://{addr}"), guard)
    }

    #[tokio::test]
    async fn login_hint_matches_sub_exactly_and_email_in_any_case() {
        let (idp, _base, _guard) = start().await;
        let users = &idp.inner.config.users;
        let maya = users
            .iter()
            .position(|u| u.email == "maya.chen@demo.homeroom.test")
            .unwrap();
        assert_eq!(idp.user_index("MAYA.Chen@demo.homeroom.test"), Some(maya));
        assert_eq!(idp.user_index(&users[maya].sub), Some(maya));
        let upper_sub = users[maya].sub.to_ascii_uppercase();
        if upper_sub != users[maya].sub {
            assert_eq!(idp.user_index(&upper_sub), None, "a sub is matched exactly");
        }
        assert_eq!(idp.user_index("nobody@demo.homeroom.test"), None);
    }

    fn http() -> reqwest::Client {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap()
    }

    const VERIFIER: &str = "0123456789abcdef0123456789abcdef0123456789abcdef";

    async fn code(base: &str) -> String {
        let challenge = homeroom_core::crypto::pkce_s256(VERIFIER);
        let url = format!(
            "{base}/authorize?response_type=code&client_id=homeroom&redirect_uri={}&state=st&nonce=n1&code_challenge={challenge}&code_challenge_method=S256&login_hint=maya.chen@demo.homeroom.test",
            url::form_urlencoded::byte_serialize(CB.as_bytes()).collect::<String>()
        );
        let resp = http().get(url).send().await.unwrap();
        assert_eq!(resp.status(), 302);
        let loc = url::Url::parse(resp.headers()["location"].to_str().unwrap()).unwrap();
        let q: HashMap<_, _> = loc.query_pairs().into_owned().collect();
        assert_eq!(q["state"], "st");
        assert_eq!(q["iss"], base);
        q["code"].clone()
    }

    async fn redeem(
        base: &str,
        code: &str,
        secret: &str,
        verifier: &str,
        redirect: &str,
    ) -> reqwest::Response {
        http()
            .post(format!("{base}/token"))
            .basic_auth("homeroom", Some(secret))
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", redirect),
                ("code_verifier", verifier),
            ])
            .send()
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn token_endpoint_checks_secret_code_pkce_and_redirect() {
        let (idp, base, _g) = start().await;
        let c = code(&base).await;
        assert_eq!(redeem(&base, &c, "wrong", VERIFIER, CB).await.status(), 401);
        // A refused client authentication does not burn the code.
        let ok = redeem(&base, &c, "s3cret", VERIFIER, CB).await;
        assert_eq!(ok.status(), 200);
        let body: Value = ok.json().await.unwrap();
        assert!(body["id_token"].as_str().unwrap().split('.').count() == 3);
        assert_eq!(body["token_type"], "Bearer");
        // Reused code.
        assert_eq!(
            redeem(&base, &c, "s3cret", VERIFIER, CB).await.status(),
            400
        );
        // Wrong verifier.
        let c = code(&base).await;
        assert_eq!(
            redeem(&base, &c, "s3cret", &VERIFIER.replace('0', "1"), CB)
                .await
                .status(),
            400
        );
        // Wrong redirect_uri.
        let c = code(&base).await;
        assert_eq!(
            redeem(&base, &c, "s3cret", VERIFIER, "http://127.0.0.1:1/other")
                .await
                .status(),
            400
        );
        // client_secret_post works too.
        let c = code(&base).await;
        let post = http()
            .post(format!("{base}/token"))
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", c.as_str()),
                ("redirect_uri", CB),
                ("code_verifier", VERIFIER),
                ("client_id", "homeroom"),
                ("client_secret", "s3cret"),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(post.status(), 200);
        assert_eq!(idp.requests("/token"), 6);
    }

    #[tokio::test]
    async fn authorize_validates_and_renders_the_picker() {
        let (_idp, base, _g) = start().await;
        let cb = url::form_urlencoded::byte_serialize(CB.as_bytes()).collect::<String>();
        let bad_client = http()
            .get(format!(
                "{base}/authorize?response_type=code&client_id=nope&redirect_uri={cb}"
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(bad_client.status(), 400);
        let bad_redirect = http()
            .get(format!("{base}/authorize?response_type=code&client_id=homeroom&redirect_uri=http%3A%2F%2Fevil.example%2Fcb"))
            .send()
            .await
            .unwrap();
        assert_eq!(bad_redirect.status(), 400);
        let page = http()
            .get(format!(
                "{base}/authorize?response_type=code&client_id=homeroom&redirect_uri={cb}&state=<x>"
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(page.status(), 200);
        let html = page.text().await.unwrap();
        assert!(html.contains("Demo District sign-in") && html.contains("Grace Hopper"));
        assert!(html.contains("&lt;x&gt;") && !html.contains("<x>"));
        let none = http().get(format!("{base}/authorize?response_type=code&client_id=homeroom&redirect_uri={cb}&prompt=none&state=s")).send().await.unwrap();
        assert_eq!(none.status(), 302);
        assert!(
            none.headers()["location"]
                .to_str()
                .unwrap()
                .contains("error=login_required")
        );
        // The picker's POST issues a code.
        let chosen = http()
            .post(format!("{base}/authorize"))
            .form(&[
                ("response_type", "code"),
                ("client_id", "homeroom"),
                ("redirect_uri", CB),
                ("state", "s"),
                ("user", "demo-teacher-2001"),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(chosen.status(), 302);
        assert!(
            chosen.headers()["location"]
                .to_str()
                .unwrap()
                .contains("code=")
        );
    }

    #[tokio::test]
    async fn tamper_over_http_and_discovery() {
        let (idp, base, _g) = start().await;
        let disc: Value = http()
            .get(format!("{base}/.well-known/openid-configuration"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(disc["issuer"], base.as_str());
        assert_eq!(disc["code_challenge_methods_supported"], json!(["S256"]));
        let r = http()
            .post(format!("{base}/_sandbox/tamper"))
            .json(&json!({"tamper": "token_endpoint_error"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204);
        let c = code(&base).await;
        let resp = redeem(&base, &c, "s3cret", VERIFIER, CB).await;
        assert_eq!(resp.status(), 400);
        idp.set_tamper(Tamper::None);
        assert_eq!(idp.requests("/.well-known/openid-configuration"), 1);
    }
}
