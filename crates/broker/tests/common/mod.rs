//! Test harness: a real broker on 127.0.0.1:0 with SQLite (in memory), the in-memory
//! session store, a manual clock, and the sandbox OIDC IdP as the tenant's upstream.
#![allow(dead_code)]

pub mod roster;
pub mod smtp;

use homeroom_broker::keys::KeySet;
use homeroom_broker::{AppState, ProviderRegistry, Settings};
use homeroom_core::crypto::sha256_hex;
use homeroom_core::{ClientId, ManualClock, ProviderId, TenantId};
use homeroom_directory::{AppRecord, AuditWriter, Directory, ProviderRecord, Tenant};
use homeroom_providers::http::HttpClient;
use homeroom_sandbox::{Flavour, OidcIdp, OidcIdpConfig, SandboxClient, SandboxKeys, ServerGuard};
use std::sync::{Arc, OnceLock};

pub const CB: &str = "http://127.0.0.1:8081/cb";
pub const APP: &str = "app";
pub const APP_SECRET: &str = "app-secret-123";
pub const OTHER: &str = "other";
pub const OTHER_SECRET: &str = "other-secret-123";
pub const PUBLIC: &str = "pub";
pub const ES_APP: &str = "app-es";
pub const STUDENT: &str = "maya.chen@demo.homeroom.test";
pub const STUDENT2: &str = "leo.okafor@demo.homeroom.test";
/// A sandbox user outside the district: no `hd`, another Entra tenant.
pub const PERSONAL: &str = "kid.personal@gmail.com";
pub const OTHER_TID: &str = "7e57e57e-0000-4000-8000-0000000000aa";

pub struct Harness {
    pub base: String,
    pub state: AppState,
    pub idp: OidcIdp,
    pub clock: ManualClock,
    _idp_guard: ServerGuard,
    _server: tokio::task::JoinHandle<()>,
}

fn sandbox_keys() -> SandboxKeys {
    static K: OnceLock<String> = OnceLock::new();
    let pem = K.get_or_init(|| SandboxKeys::generate().unwrap().private_pem().to_owned());
    SandboxKeys::from_pem(pem).unwrap()
}

fn broker_keys() -> Vec<homeroom_directory::SigningKey> {
    static K: OnceLock<Vec<homeroom_directory::SigningKey>> = OnceLock::new();
    K.get_or_init(|| {
        vec![
            homeroom_broker::keys::generate("RS256", "current", 0).unwrap(),
            homeroom_broker::keys::generate("ES256", "current", 0).unwrap(),
        ]
    })
    .clone()
}

pub fn app_record(id: &str, secret: Option<&str>, alg: &str) -> AppRecord {
    AppRecord {
        client_id: ClientId::new(id),
        tenant: TenantId::new("t1"),
        name: format!("App {id}"),
        secret_hash: secret.map(sha256_hex),
        token_endpoint_auth_method: if secret.is_some() {
            "client_secret_basic".into()
        } else {
            "none".into()
        },
        redirect_uris: vec![
            CB.into(),
            "https://app.example.test/cb".into(),
            "https://app.example.test/cb2".into(),
        ],
        post_logout_redirect_uris: vec!["https://app.example.test/bye".into()],
        allowed_scopes: ["openid", "profile", "email", "offline_access"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect(),
        id_token_alg: alg.into(),
        enabled: true,
        initiate_login_uri: None,
        start_url: None,
        allowed_origins: vec![],
    }
}

/// Which stores and which upstream flavour a harness uses.
#[derive(Clone)]
pub struct Opts {
    pub directory: String,
    pub sessions: String,
    pub flavour: Flavour,
    /// Adjusts broker settings before the server starts.
    pub tune: Option<fn(&mut Settings)>,
}

impl Default for Opts {
    fn default() -> Self {
        Self {
            directory: "sqlite::memory:".into(),
            sessions: "memory://".into(),
            flavour: Flavour::Generic,
            tune: None,
        }
    }
}

pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// A fresh PostgreSQL schema for one test (None, after saying why, when PostgreSQL is not
/// reachable outside CI; in CI that is a failure).
pub async fn pg_schema_url() -> Option<String> {
    use sqlx::Connection;
    let base = std::env::var("HOMEROOM_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let mut admin = match sqlx::PgConnection::connect(&base).await {
        Ok(c) => c,
        Err(e) if in_ci() => panic!("postgres not reachable in CI: {e}"),
        Err(e) => {
            eprintln!("skipped: postgres not reachable ({e})");
            return None;
        }
    };
    let name = format!("b_{}", ulid::Ulid::new().to_string().to_lowercase());
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {name}")))
        .execute(&mut admin)
        .await
        .unwrap();
    let _ = admin.close().await;
    Some(format!("{base}?options=-c%20search_path%3D{name}"))
}

/// The Redis URL for tests (None outside CI when Redis is not reachable).
pub async fn redis_url() -> Option<String> {
    let url = std::env::var("HOMEROOM_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    match homeroom_session::open(&url).await {
        Ok(_) => Some(url),
        Err(e) if in_ci() => panic!("redis not reachable in CI: {e}"),
        Err(e) => {
            eprintln!("skipped: redis not reachable ({e})");
            None
        }
    }
}

pub async fn harness() -> Harness {
    harness_with(Opts::default()).await
}

pub async fn harness_with(opts: Opts) -> Harness {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let mut users = homeroom_sandbox::demo_district_users();
    let mut personal =
        homeroom_sandbox::SandboxUser::new("personal-1", "Kid", "Personal", PERSONAL, "student");
    personal.tid = Some(OTHER_TID.into());
    personal.oid = Some("9d0c0c0c-0000-4000-8000-000000000001".into());
    users.push(personal);
    let cfg = OidcIdpConfig::new(
        opts.flavour.clone(),
        vec![SandboxClient {
            client_id: "homeroom".into(),
            client_secret: "upstream-secret".into(),
            redirect_uris: vec![format!("{base}/callback/idp")],
        }],
        users,
        sandbox_keys(),
    );
    let (idp, _addr, idp_guard) = OidcIdp::bind_and_serve(cfg).await.unwrap();
    let dir = Directory::connect(&opts.directory).await.unwrap();
    dir.upsert_tenant(&Tenant {
        id: TenantId::new("t1"),
        name: "Demo District".into(),
        domains: vec!["demo.homeroom.test".into()],
        session_idle_secs: 1800,
        session_absolute_secs: 43_200,
        session_warning_secs: 300,
    })
    .await
    .unwrap();
    dir.upsert_tenant(&Tenant {
        id: TenantId::new("t2"),
        name: "Other District".into(),
        domains: vec!["other.test".into()],
        session_idle_secs: 1800,
        session_absolute_secs: 43_200,
        session_warning_secs: 300,
    })
    .await
    .unwrap();
    let (kind, config) = match &opts.flavour {
        Flavour::Generic => (
            "oidc",
            serde_json::json!({
                "issuer": idp.issuer(), "client_id": "homeroom", "client_secret": "upstream-secret",
                "trust_email": true, "timeout_secs": 2
            }),
        ),
        Flavour::Google => (
            "google",
            serde_json::json!({
                "issuer": idp.issuer(), "client_id": "homeroom", "client_secret": "upstream-secret", "timeout_secs": 2
            }),
        ),
        Flavour::Microsoft { tenant_id } => (
            "microsoft",
            serde_json::json!({
                "authority": idp.issuer(), "tenant": tenant_id, "client_id": "homeroom", "client_secret": "upstream-secret", "timeout_secs": 2
            }),
        ),
    };
    dir.upsert_provider(&ProviderRecord {
        id: ProviderId::new("idp"),
        tenant: TenantId::new("t1"),
        kind: kind.into(),
        display_name: "Demo District".into(),
        enabled: true,
        config,
    })
    .await
    .unwrap();
    dir.upsert_app(&app_record(APP, Some(APP_SECRET), "RS256"))
        .await
        .unwrap();
    dir.upsert_app(&app_record(OTHER, Some(OTHER_SECRET), "RS256"))
        .await
        .unwrap();
    dir.upsert_app(&app_record(PUBLIC, None, "RS256"))
        .await
        .unwrap();
    dir.upsert_app(&app_record(ES_APP, Some(APP_SECRET), "ES256"))
        .await
        .unwrap();
    let mut t2app = app_record("t2-app", Some(APP_SECRET), "RS256");
    t2app.tenant = TenantId::new("t2");
    dir.upsert_app(&t2app).await.unwrap();
    for k in broker_keys() {
        dir.insert_signing_key(&k).await.unwrap();
    }
    let clock = ManualClock::starting_now();
    let http = HttpClient::with_defaults().unwrap();
    let (providers, failures) = ProviderRegistry::load(&dir, &http, Arc::new(clock.clone()))
        .await
        .unwrap();
    assert!(failures.is_empty(), "{failures:?}");
    let keys = KeySet::load_or_generate(&dir, 0).await.unwrap();
    let sessions = homeroom_session::open(&opts.sessions).await.unwrap();
    let audit = AuditWriter::spawn(dir.clone());
    let mut settings = Settings::new(&base);
    if let Some(tune) = opts.tune {
        tune(&mut settings);
    }
    let state = AppState::new(
        settings,
        dir,
        sessions,
        audit,
        providers,
        keys,
        Arc::new(clock.clone()),
    );
    let router = homeroom_broker::app(state.clone());
    let server = tokio::spawn(async move {
        let _ = axum::serve(
            listener,
            router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .await;
    });
    Harness {
        base,
        state,
        idp,
        clock,
        _idp_guard: idp_guard,
        _server: server,
    }
}

/// A browser: its own cookie jar, redirects not followed (tests read Location).
pub fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

pub fn location(r: &reqwest::Response) -> String {
    r.headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

pub fn query_param(url: &str, key: &str) -> Option<String> {
    let u = url::Url::parse(url).ok()?;
    u.query_pairs()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

pub fn pkce() -> (String, String) {
    let v = homeroom_core::crypto::random_token(32).unwrap();
    let c = homeroom_core::crypto::pkce_s256(&v);
    (v, c)
}

/// Authorize URL for `client` with the usual parameters plus `extra`.
pub fn authorize_url(
    h: &Harness,
    client: &str,
    challenge: Option<&str>,
    extra: &[(&str, &str)],
) -> String {
    let mut q = url::form_urlencoded::Serializer::new(String::new());
    q.append_pair("response_type", "code")
        .append_pair("client_id", client)
        .append_pair("redirect_uri", CB);
    let scope = extra
        .iter()
        .find(|(k, _)| *k == "scope")
        .map_or("openid profile email offline_access", |(_, v)| *v);
    q.append_pair("scope", scope)
        .append_pair("state", "st-123")
        .append_pair("nonce", "n-456");
    if let Some(c) = challenge {
        q.append_pair("code_challenge", c)
            .append_pair("code_challenge_method", "S256");
    }
    for (k, v) in extra.iter().filter(|(k, _)| *k != "scope") {
        q.append_pair(k, v);
    }
    format!("{}/oauth2/authorize?{}", h.base, q.finish())
}

/// Follows redirects inside Homeroom and the sandbox until the app's redirect URI (or a
/// page) is reached; returns the final response's Location (app redirect) or the response.
pub async fn follow(b: &reqwest::Client, h: &Harness, start: &str) -> reqwest::Response {
    let mut url = start.to_owned();
    for _ in 0..12 {
        let r = b.get(&url).send().await.unwrap();
        if !r.status().is_redirection() {
            return r;
        }
        let loc = location(&r);
        if loc.starts_with(CB) || loc.starts_with("https://app.example.test") {
            return r;
        }
        url = if loc.starts_with('/') {
            format!("{}{}", h.base, loc)
        } else {
            loc
        };
    }
    panic!("too many redirects");
}

/// A full login through the sandbox (silent upstream sign-in by login_hint); returns the
/// code and the PKCE verifier.
pub async fn login(b: &reqwest::Client, h: &Harness, client: &str, user: &str) -> (String, String) {
    login_scoped(b, h, client, user, "openid profile email offline_access").await
}

/// [`login`] asking for `scope`.
pub async fn login_scoped(
    b: &reqwest::Client,
    h: &Harness,
    client: &str,
    user: &str,
    scope: &str,
) -> (String, String) {
    let (v, c) = pkce();
    let r = follow(
        b,
        h,
        &authorize_url(
            h,
            client,
            Some(&c),
            &[("login_hint", user), ("scope", scope)],
        ),
    )
    .await;
    let loc = location(&r);
    if !loc.starts_with(CB) {
        let status = r.status();
        let (_, code, reference) = page_code(r).await;
        h.state.audit.flush().await;
        let trace = h
            .state
            .directory
            .audit_for_ref(&homeroom_core::RefId::new(reference))
            .await
            .unwrap_or_default();
        panic!(
            "expected a redirect to the app, got {status} {code}: {:?}",
            trace
                .iter()
                .map(|e| e.detail.to_string())
                .collect::<Vec<_>>()
        );
    }
    assert_eq!(query_param(&loc, "state").as_deref(), Some("st-123"));
    assert_eq!(query_param(&loc, "iss").as_deref(), Some(h.base.as_str()));
    (query_param(&loc, "code").expect("code"), v)
}

pub async fn redeem(
    h: &Harness,
    client: &str,
    secret: Option<&str>,
    code: &str,
    verifier: &str,
) -> reqwest::Response {
    let c = reqwest::Client::new();
    let mut req = c.post(format!("{}/oauth2/token", h.base));
    let mut form = vec![
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", CB),
        ("code_verifier", verifier),
    ];
    match secret {
        Some(s) => req = req.basic_auth(client, Some(s)),
        None => form.push(("client_id", client)),
    }
    req.form(&form).send().await.unwrap()
}

pub async fn json(r: reqwest::Response) -> serde_json::Value {
    r.json().await.unwrap()
}

/// The catalogue code shown on an error page.
pub async fn page_code(r: reqwest::Response) -> (u16, String, String) {
    let status = r.status().as_u16();
    let reference = r
        .headers()
        .get("x-homeroom-ref")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = r.text().await.unwrap();
    let code = body
        .split("data-testid=\"error-code\">")
        .nth(1)
        .and_then(|s| s.split('<').next())
        .unwrap_or("")
        .to_owned();
    (status, code, reference)
}

/// An admin API access token of tenant `t1`: registers `client` (confidential, with the
/// `homeroom:admin` scope) and runs the client-credentials grant.
pub async fn admin_bot_token(h: &Harness, client: &str, secret: &str) -> String {
    admin_bot_token_of(h, "t1", client, secret).await
}

/// [`admin_bot_token`] for another tenant.
pub async fn admin_bot_token_of(h: &Harness, tenant: &str, client: &str, secret: &str) -> String {
    let mut app = app_record(client, Some(secret), "ES256");
    app.tenant = TenantId::new(tenant);
    app.allowed_scopes.push("homeroom:admin".into());
    h.state.directory.upsert_app(&app).await.unwrap();
    let r = reqwest::Client::new()
        .post(format!("{}/oauth2/token", h.base))
        .basic_auth(client, Some(secret))
        .form(&[
            ("grant_type", "client_credentials"),
            ("scope", "homeroom:admin"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    json(r).await["access_token"].as_str().unwrap().to_owned()
}

/// A request to the admin API (`/admin/api{path}`) with a Bearer token.
pub fn admin_api(
    h: &Harness,
    token: &str,
    method: reqwest::Method,
    path: &str,
) -> reqwest::RequestBuilder {
    reqwest::Client::new()
        .request(method, format!("{}/admin/api{path}", h.base))
        .bearer_auth(token)
}
