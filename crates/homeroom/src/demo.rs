//! `homeroom demo`: a Demo District whose upstream IdP is the sandbox OIDC emulator
//! (mounted at `/sandbox/demo`), the stable demo clients `demo-app` / `demo-public`, and a
//! small downstream app at `/demo/app` that signs in through Homeroom like any real app
//! (authorization code + PKCE, code exchange over HTTP, ID-token signature checked against
//! Homeroom's JWKS) and shows the claims it received.

use crate::config::{AppConfig, Config, ProviderConfig, TenantConfig};
use anyhow::{Context, Result};
use axum::Router;
use axum::extract::{Query, State};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use homeroom_core::crypto;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};

pub const TENANT: &str = "demo";
pub const PROVIDER: &str = "demo-idp";
pub const DOMAIN: &str = "demo.homeroom.test";
pub const DEMO_APP: &str = "demo-app";
pub const DEMO_SECRET: &str = "demo-secret";
pub const DEMO_PUBLIC: &str = "demo-public";
pub const DEMO_REDIRECT: &str = "http://127.0.0.1:8081/cb";

/// The prepared demo: the sandbox IdP and the secret Homeroom uses with it.
pub struct Demo {
    idp: homeroom_sandbox::OidcIdp,
    clever: homeroom_sandbox::CleverIdp,
    classlink: homeroom_sandbox::ClassLinkIdp,
    gg4l: homeroom_sandbox::Gg4lIdp,
    /// The sandbox SAML IdP (feature `saml`), provider `saml`.
    #[cfg(feature = "saml")]
    saml: homeroom_sandbox::saml::SamlIdp,
    upstream_secret: String,
    issuer: String,
}

/// The demo's school portals: provider id, mount path, portal page.
pub const PORTALS: [(&str, &str, &str); 3] = [
    ("clever", "/sandbox/clever", "/sandbox/clever/portal"),
    (
        "classlink",
        "/sandbox/classlink",
        "/sandbox/classlink/launchpad",
    ),
    ("gg4l", "/sandbox/gg4l", "/sandbox/gg4l/passport"),
];

/// The client Homeroom is at a portal: tiles launch the demo app through Homeroom.
fn portal_client(issuer: &str, provider: &str, secret: &str) -> homeroom_sandbox::SandboxClient {
    homeroom_sandbox::SandboxClient {
        client_id: "homeroom".into(),
        client_secret: secret.to_owned(),
        redirect_uris: vec![
            format!("{issuer}/callback/{provider}?app={DEMO_APP}"),
            format!("{issuer}/callback/{provider}"),
        ],
    }
}

impl Demo {
    /// Builds the sandbox IdP (keys kept as PEM in the data dir across runs).
    pub async fn prepare(issuer: &str, data_dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("cannot create {}", data_dir.display()))?;
        let key_path = data_dir.join("sandbox-demo-idp.pem");
        let keys = match std::fs::read_to_string(&key_path) {
            Ok(pem) => homeroom_sandbox::SandboxKeys::from_pem(&pem)
                .context("sandbox key file is unusable")?,
            Err(_) => {
                let k = tokio::task::spawn_blocking(homeroom_sandbox::SandboxKeys::generate)
                    .await?
                    .context("cannot generate the sandbox key")?;
                std::fs::write(&key_path, k.private_pem())
                    .with_context(|| format!("cannot write {}", key_path.display()))?;
                k
            }
        };
        let upstream_secret = crypto::random_token(24)?;
        let idp = homeroom_sandbox::OidcIdp::new(homeroom_sandbox::OidcIdpConfig {
            issuer: format!("{issuer}/sandbox/demo"),
            flavour: homeroom_sandbox::Flavour::Generic,
            clients: vec![homeroom_sandbox::SandboxClient {
                client_id: "homeroom".into(),
                client_secret: upstream_secret.clone(),
                redirect_uris: vec![format!("{issuer}/callback/{PROVIDER}")],
            }],
            users: homeroom_sandbox::demo_district_users(),
            keys: keys.clone(),
            code_ttl_secs: 60,
        });
        let mut clever_cfg = homeroom_sandbox::CleverIdpConfig::new(
            vec![portal_client(issuer, "clever", &upstream_secret)],
            homeroom_sandbox::demo_clever_district(),
            keys.clone(),
        );
        clever_cfg.base_url = format!("{issuer}/sandbox/clever");
        let mut classlink_cfg = homeroom_sandbox::ClassLinkIdpConfig::new(
            vec![portal_client(issuer, "classlink", &upstream_secret)],
            homeroom_sandbox::demo_classlink_tenant(),
            keys.clone(),
        );
        classlink_cfg.base_url = format!("{issuer}/sandbox/classlink");
        let mut gg4l_cfg = homeroom_sandbox::Gg4lIdpConfig::new(
            vec![portal_client(issuer, "gg4l", &upstream_secret)],
            homeroom_sandbox::demo_gg4l_district(),
            keys.clone(),
        );
        gg4l_cfg.base_url = format!("{issuer}/sandbox/gg4l");
        #[cfg(feature = "saml")]
        let saml = saml_idp(issuer, data_dir).await?;
        Ok(Self {
            idp,
            clever: homeroom_sandbox::CleverIdp::new(clever_cfg),
            classlink: homeroom_sandbox::ClassLinkIdp::new(classlink_cfg),
            gg4l: homeroom_sandbox::Gg4lIdp::new(gg4l_cfg),
            #[cfg(feature = "saml")]
            saml,
            upstream_secret,
            issuer: issuer.to_owned(),
        })
    }

    /// Adds the Demo District tenant, its provider and the demo apps to a config.
    pub fn add_to_config(&self, cfg: &mut Config) {
        let issuer = &self.issuer;
        cfg.tenants.insert(
            TENANT.into(),
            TenantConfig {
                name: "Demo District".into(),
                domains: vec![DOMAIN.into()],
                session_idle_minutes: 30,
                session_warning_minutes: 25,
                session_absolute_hours: 12,
                trusted_networks: vec![],
                admins: vec![],
                roster_required: false,
                classroom_codes: false,
                family_policies: vec![],
                parent_code_days: None,
                classroom_badges_anywhere: false,
            },
        );
        let mut settings = BTreeMap::new();
        settings.insert(
            "issuer".to_owned(),
            serde_json::json!(format!("{issuer}/sandbox/demo")),
        );
        settings.insert("client_id".to_owned(), serde_json::json!("homeroom"));
        settings.insert(
            "client_secret".to_owned(),
            serde_json::json!(self.upstream_secret),
        );
        settings.insert("trust_email".to_owned(), serde_json::json!(true));
        cfg.providers.insert(
            PROVIDER.into(),
            ProviderConfig {
                tenant: TENANT.into(),
                kind: "oidc".into(),
                display_name: Some("Demo District".into()),
                enabled: true,
                client_secret_env: None,
                settings,
            },
        );
        let app = |secret: Option<&str>, uris: Vec<String>, name: &str| AppConfig {
            tenant: TENANT.into(),
            name: Some(name.into()),
            client_secret: secret.map(str::to_owned),
            client_secret_env: None,
            token_endpoint_auth_method: None,
            redirect_uris: uris,
            post_logout_redirect_uris: vec![
                format!("{issuer}/demo/app"),
                "http://127.0.0.1:8081/logged-out".into(),
            ],
            scopes: None,
            id_token_alg: None,
            enabled: true,
            native: false,
            initiate_login_uri: None,
            start_url: Some(format!("{issuer}/demo/app")),
            allowed_origins: vec![issuer.clone()],
            assign_roles: vec![],
            assign_schools: vec![],
            assign_grades: vec![],
        };
        cfg.apps.insert(
            DEMO_APP.into(),
            app(
                Some(DEMO_SECRET),
                vec![DEMO_REDIRECT.into(), format!("{issuer}/demo/app/callback")],
                "Demo App",
            ),
        );
        cfg.apps.insert(
            DEMO_PUBLIC.into(),
            app(None, vec![DEMO_REDIRECT.into()], "Demo Public Client"),
        );
        // The school portals, each with its sandbox page of tiles.
        let portal = |kind: &str, name: &str, mut settings: BTreeMap<String, serde_json::Value>| {
            settings.insert("client_id".to_owned(), serde_json::json!("homeroom"));
            settings.insert(
                "client_secret".to_owned(),
                serde_json::json!(self.upstream_secret),
            );
            ProviderConfig {
                tenant: TENANT.into(),
                kind: kind.into(),
                display_name: Some(name.into()),
                enabled: true,
                client_secret_env: None,
                settings,
            }
        };
        let base = |p: &str| serde_json::json!(format!("{issuer}/sandbox/{p}"));
        let mut clever = BTreeMap::new();
        clever.insert(
            "district_ids".to_owned(),
            serde_json::json!([homeroom_sandbox::DEMO_CLEVER_DISTRICT_ID]),
        );
        clever.insert("oauth_base".to_owned(), base("clever"));
        clever.insert("api_base".to_owned(), base("clever"));
        cfg.providers
            .insert("clever".into(), portal("clever", "Clever", clever));
        let mut classlink = BTreeMap::new();
        classlink.insert(
            "tenant_ids".to_owned(),
            serde_json::json!([homeroom_sandbox::DEMO_CLASSLINK_TENANT_ID]),
        );
        classlink.insert("launchpad_base".to_owned(), base("classlink"));
        classlink.insert("api_base".to_owned(), base("classlink"));
        cfg.providers.insert(
            "classlink".into(),
            portal("classlink", "ClassLink", classlink),
        );
        let mut gg4l = BTreeMap::new();
        gg4l.insert(
            "district_ids".to_owned(),
            serde_json::json!([homeroom_sandbox::DEMO_GG4L_DISTRICT_ID]),
        );
        gg4l.insert("base_url".to_owned(), base("gg4l"));
        gg4l.insert(
            "jwks_url".to_owned(),
            serde_json::json!(self.gg4l.jwks_url()),
        );
        cfg.providers
            .insert("gg4l".into(), portal("gg4l", "GG4L", gg4l));
        #[cfg(feature = "saml")]
        cfg.providers
            .insert(SAML_PROVIDER.into(), saml_provider(&self.saml));
    }

    /// The sandbox IdP and the demo app.
    pub fn routes(self, issuer: &str) -> Router {
        let app = DemoApp {
            issuer: issuer.to_owned(),
            http: reqwest::Client::new(),
            pending: Arc::default(),
            sessions: Arc::default(),
        };
        let demo_app = Router::new()
            .route("/demo/app", get(demo_home))
            .route("/demo/app/callback", get(demo_callback))
            .with_state(app);
        Router::new()
            .nest("/sandbox/demo", self.idp.router())
            .nest("/sandbox/clever", self.clever.router())
            .nest("/sandbox/classlink", self.classlink.router())
            .nest("/sandbox/gg4l", self.gg4l.router())
            .merge(saml_routes(&self))
            .merge(demo_app)
    }
}

/// The Demo District's SAML provider id; its IdP is the sandbox SAML IdP at `/sandbox/saml`.
pub const SAML_PROVIDER: &str = "saml";

/// The sandbox SAML IdP: its RSA key is kept as PEM in the data dir (and its certificate
/// written beside it), so testers can sign their own responses against it.
#[cfg(feature = "saml")]
async fn saml_idp(issuer: &str, data_dir: &Path) -> Result<homeroom_sandbox::saml::SamlIdp> {
    let key_path = data_dir.join("sandbox-saml-idp.pem");
    let pem = match std::fs::read_to_string(&key_path) {
        Ok(pem) => pem,
        Err(_) => {
            let k = tokio::task::spawn_blocking(homeroom_sandbox::SandboxKeys::generate)
                .await?
                .context("cannot generate the sandbox SAML key")?;
            std::fs::write(&key_path, k.private_pem())
                .with_context(|| format!("cannot write {}", key_path.display()))?;
            k.private_pem().to_owned()
        }
    };
    let idp = homeroom_sandbox::saml::SamlIdp::new(homeroom_sandbox::saml::SamlIdpConfig {
        base_url: format!("{issuer}/sandbox/saml"),
        sp_entity_id: format!("{issuer}/saml/{SAML_PROVIDER}/metadata"),
        acs_url: format!("{issuer}/saml/{SAML_PROVIDER}/acs"),
        users: homeroom_sandbox::demo_district_users(),
        key_pem: pem,
        portal_apps: vec![DEMO_APP.into()],
    })
    .context("sandbox SAML key file is unusable")?;
    let crt = data_dir.join("sandbox-saml-idp.crt");
    std::fs::write(&crt, idp.certificate_pem())
        .with_context(|| format!("cannot write {}", crt.display()))?;
    Ok(idp)
}

#[cfg(feature = "saml")]
fn saml_provider(idp: &homeroom_sandbox::saml::SamlIdp) -> ProviderConfig {
    let mut settings = BTreeMap::new();
    settings.insert(
        "idp_metadata_xml".to_owned(),
        serde_json::json!(idp.metadata_xml()),
    );
    settings.insert("allow_idp_initiated".to_owned(), serde_json::json!(true));
    settings.insert("relay_state_apps".to_owned(), serde_json::json!([DEMO_APP]));
    settings.insert("trust_email".to_owned(), serde_json::json!(true));
    ProviderConfig {
        tenant: TENANT.into(),
        kind: "saml".into(),
        display_name: Some("Demo District (SAML)".into()),
        enabled: true,
        client_secret_env: None,
        settings,
    }
}

#[cfg(feature = "saml")]
fn saml_routes(d: &Demo) -> Router {
    Router::new().nest("/sandbox/saml", d.saml.router())
}

#[cfg(not(feature = "saml"))]
fn saml_routes(_: &Demo) -> Router {
    Router::new()
}

/// The demo app's own state: pending logins and signed-in browsers, in memory, bounded.
#[derive(Clone)]
struct DemoApp {
    issuer: String,
    http: reqwest::Client,
    /// state -> (nonce, PKCE verifier)
    pending: Arc<Mutex<HashMap<String, (String, String)>>>,
    /// demo session id -> (ID-token claims, raw ID token, userinfo)
    sessions: Arc<Mutex<HashMap<String, SignedIn>>>,
}

/// What the demo app keeps per signed-in browser: ID-token claims, the raw ID token (for
/// logout), and the UserInfo answer.
type SignedIn = (serde_json::Value, String, serde_json::Value);

const APP_COOKIE: &str = "demo_app_sid";

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|s| s.split(';'))
        .find_map(|p| {
            let (k, v) = p.trim().split_once('=')?;
            (k == name).then(|| v.to_owned())
        })
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn page(title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{t} · Demo App</title><link rel=\"stylesheet\" href=\"/static/homeroom.css\"></head><body><main class=\"card\"><h1>{t}</h1>{body}</main></body></html>",
        t = escape(title)
    );
    let mut r = Html(html).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn demo_home(State(app): State<DemoApp>, headers: HeaderMap) -> Response {
    if let Some(sid) = cookie(&headers, APP_COOKIE) {
        let found = lock(&app.sessions).get(&sid).cloned();
        if let Some((claims, id_token, userinfo)) = found {
            let pretty = serde_json::to_string_pretty(&claims).unwrap_or_default();
            let ui = serde_json::to_string_pretty(&userinfo).unwrap_or_default();
            let who = claims["name"]
                .as_str()
                .or(claims["email"].as_str())
                .unwrap_or("someone");
            let logout = format!(
                "/oauth2/logout?id_token_hint={}&post_logout_redirect_uri={}",
                url::form_urlencoded::byte_serialize(id_token.as_bytes()).collect::<String>(),
                url::form_urlencoded::byte_serialize(format!("{}/demo/app", app.issuer).as_bytes())
                    .collect::<String>()
            );
            return page(
                "Demo App: signed in",
                &format!(
                    "<p class=\"lead\">Signed in through Homeroom as <strong data-testid=\"who\">{}</strong>.</p><h2>ID token claims</h2><pre data-testid=\"claims\">{}</pre><h2>UserInfo</h2><pre>{}</pre><p><a class=\"button\" href=\"{}\">Sign out</a></p>",
                    escape(who),
                    escape(&pretty),
                    escape(&ui),
                    escape(&logout)
                ),
            );
        }
    }
    // Not signed in: start a login like any OIDC app would.
    let (Ok(st), Ok(nonce), Ok(verifier)) = (
        crypto::random_token(16),
        crypto::random_token(16),
        crypto::random_token(32),
    ) else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "randomness unavailable").into_response();
    };
    {
        let mut p = lock(&app.pending);
        if p.len() > 10_000 {
            p.clear();
        }
        p.insert(st.clone(), (nonce.clone(), verifier.clone()));
    }
    let q = [
        ("response_type", "code"),
        ("client_id", DEMO_APP),
        ("redirect_uri", &format!("{}/demo/app/callback", app.issuer)),
        ("scope", "openid profile email"),
        ("state", &st),
        ("nonce", &nonce),
        ("code_challenge", &crypto::pkce_s256(&verifier)),
        ("code_challenge_method", "S256"),
    ];
    let qs: String = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(q)
        .finish();
    let mut r = StatusCode::FOUND.into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("/oauth2/authorize?{qs}")) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

#[derive(serde::Deserialize)]
struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

async fn demo_callback(State(app): State<DemoApp>, Query(q): Query<CallbackQuery>) -> Response {
    if let Some(e) = q.error {
        return page(
            "Demo App: sign-in failed",
            &format!(
                "<p>Homeroom answered <code>{}</code>: {}</p><p><a class=\"button\" href=\"/demo/app\">Try again</a></p>",
                escape(&e),
                escape(&q.error_description.unwrap_or_default())
            ),
        );
    }
    let pending = q.state.as_ref().and_then(|s| lock(&app.pending).remove(s));
    let (Some(code), Some((nonce, verifier))) = (q.code, pending) else {
        return page(
            "Demo App: sign-in failed",
            "<p>Unknown or reused state.</p><p><a class=\"button\" href=\"/demo/app\">Try again</a></p>",
        );
    };
    match exchange(&app, &code, &nonce, &verifier).await {
        Ok((claims, id_token, userinfo)) => {
            let Ok(sid) = crypto::random_token(24) else {
                return (StatusCode::INTERNAL_SERVER_ERROR, "randomness unavailable")
                    .into_response();
            };
            {
                let mut s = lock(&app.sessions);
                if s.len() > 10_000 {
                    s.clear();
                }
                s.insert(sid.clone(), (claims, id_token, userinfo));
            }
            let mut r = StatusCode::SEE_OTHER.into_response();
            r.headers_mut()
                .insert(header::LOCATION, HeaderValue::from_static("/demo/app"));
            if let Ok(v) = HeaderValue::from_str(&format!(
                "{APP_COOKIE}={sid}; Path=/demo; HttpOnly; SameSite=Lax"
            )) {
                r.headers_mut().insert(header::SET_COOKIE, v);
            }
            r
        }
        Err(e) => page(
            "Demo App: sign-in failed",
            &format!("<p>{}</p>", escape(&e.to_string())),
        ),
    }
}

/// Code exchange and ID-token validation, as an app does it.
async fn exchange(
    app: &DemoApp,
    code: &str,
    nonce: &str,
    verifier: &str,
) -> Result<(serde_json::Value, String, serde_json::Value)> {
    let redirect = format!("{}/demo/app/callback", app.issuer);
    let resp: serde_json::Value = app
        .http
        .post(format!("{}/oauth2/token", app.issuer))
        .basic_auth(DEMO_APP, Some(DEMO_SECRET))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", &redirect),
            ("code_verifier", verifier),
        ])
        .send()
        .await?
        .json()
        .await?;
    let id_token = resp["id_token"]
        .as_str()
        .context("no id_token in the token response")?
        .to_owned();
    let jwks: jsonwebtoken::jwk::JwkSet = app
        .http
        .get(format!("{}/oauth2/jwks", app.issuer))
        .send()
        .await?
        .json()
        .await?;
    let header = jsonwebtoken::decode_header(&id_token)?;
    let kid = header.kid.context("ID token without kid")?;
    let jwk = jwks.find(&kid).context("ID token kid not in JWKS")?;
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk)?;
    anyhow::ensure!(
        matches!(
            header.alg,
            jsonwebtoken::Algorithm::RS256 | jsonwebtoken::Algorithm::ES256
        ),
        "unexpected ID token algorithm"
    );
    let mut v = jsonwebtoken::Validation::new(header.alg);
    v.set_audience(&[DEMO_APP]);
    v.set_issuer(&[app.issuer.as_str()]);
    let claims = jsonwebtoken::decode::<serde_json::Value>(&id_token, &key, &v)?.claims;
    anyhow::ensure!(claims["nonce"].as_str() == Some(nonce), "nonce mismatch");
    let at = resp["access_token"].as_str().unwrap_or_default();
    let userinfo: serde_json::Value = app
        .http
        .get(format!("{}/oauth2/userinfo", app.issuer))
        .bearer_auth(at)
        .send()
        .await?
        .json()
        .await
        .unwrap_or_default();
    Ok((claims, id_token, userinfo))
}
