//! Shared harness: a sandbox IdP on 127.0.0.1:0 and the real adapter pointed at it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

use homeroom_core::{LoginError, ProviderId, SystemClock, UpstreamIdentity};
use homeroom_providers::http::HttpClient;
use homeroom_providers::{
    BeginLogin, Callback, DynProvider, ProviderError, ProviderSettings, UpstreamFlow, build,
};
use homeroom_sandbox::{
    Flavour, OidcIdp, OidcIdpConfig, SandboxClient, SandboxKeys, SandboxUser, ServerGuard,
};
use serde_json::Value;
use std::sync::{Arc, OnceLock};

pub const CLIENT_ID: &str = "homeroom-test";
pub const CLIENT_SECRET: &str = "test-secret-0123456789";
pub const CB: &str = "http://127.0.0.1:1/callback";

pub fn keys() -> SandboxKeys {
    static KEYS: OnceLock<SandboxKeys> = OnceLock::new();
    KEYS.get_or_init(|| SandboxKeys::generate().unwrap())
        .clone()
}

pub struct Harness {
    pub idp: OidcIdp,
    pub base: String,
    pub provider: DynProvider,
    _guard: ServerGuard,
}

/// Starts the IdP, then builds the provider from `config(base_url)`.
pub async fn start(
    flavour: Flavour,
    users: Vec<SandboxUser>,
    kind: &str,
    tenant_domains: Vec<String>,
    config: impl FnOnce(&str) -> Value,
) -> Harness {
    let client = SandboxClient {
        client_id: CLIENT_ID.into(),
        client_secret: CLIENT_SECRET.into(),
        redirect_uris: vec![CB.into()],
    };
    let (idp, addr, guard) =
        OidcIdp::bind_and_serve(OidcIdpConfig::new(flavour, vec![client], users, keys()))
            .await
            .unwrap();
    let base = format!("http://{addr}");
    let settings = ProviderSettings {
        id: ProviderId::new("upstream"),
        display_name: "Test IdP".into(),
        kind: kind.into(),
        config: config(&base),
        tenant_domains,
    };
    let http = HttpClient::with_defaults().unwrap();
    let provider = build(&settings, &http, Arc::new(SystemClock))
        .unwrap_or_else(|p| panic!("config problems: {p:?}"));
    Harness {
        idp,
        base,
        provider,
        _guard: guard,
    }
}

fn random() -> String {
    homeroom_core::crypto::random_token(32).unwrap()
}

/// Begins a login with `login_hint` (silent sign-in at the sandbox), follows the redirect
/// and returns the callback and flow, without finishing.
pub async fn upstream(h: &Harness, hint: &str) -> (Callback, UpstreamFlow, url::Url) {
    let verifier = random();
    let flow = UpstreamFlow {
        nonce: random(),
        pkce_verifier: verifier.clone(),
        redirect_uri: CB.into(),
    };
    let begin = BeginLogin {
        state: random(),
        nonce: flow.nonce.clone(),
        pkce_challenge: homeroom_core::crypto::pkce_s256(&verifier),
        redirect_uri: CB.into(),
        prompt: None,
        login_hint: Some(hint.into()),
    };
    let redirect = h.provider.as_redirect().unwrap();
    let url = redirect.begin(&begin).await.unwrap();
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let resp = client.get(url.clone()).send().await.unwrap();
    assert_eq!(
        resp.status(),
        302,
        "sandbox should answer a hinted login at once"
    );
    let loc = url::Url::parse(resp.headers()["location"].to_str().unwrap()).unwrap();
    let mut cb = Callback::default();
    for (k, v) in loc.query_pairs() {
        match k.as_ref() {
            "code" => cb.code = Some(v.into_owned()),
            "state" => cb.state = Some(v.into_owned()),
            "iss" => cb.iss = Some(v.into_owned()),
            "error" => cb.error = Some(v.into_owned()),
            "error_description" => cb.error_description = Some(v.into_owned()),
            _ => {}
        }
    }
    assert_eq!(cb.state.as_deref(), Some(begin.state.as_str()));
    (cb, flow, url)
}

/// A whole login as `hint`.
pub async fn login(h: &Harness, hint: &str) -> Result<UpstreamIdentity, ProviderError> {
    let (cb, flow, _) = upstream(h, hint).await;
    h.provider.as_redirect().unwrap().finish(&cb, &flow).await
}

/// A whole login that must fail; returns the catalogue entry.
pub async fn refused(h: &Harness, hint: &str) -> LoginError {
    match login(h, hint).await {
        Ok(id) => panic!("login unexpectedly succeeded: {id:?}"),
        Err(e) => e.error,
    }
}
