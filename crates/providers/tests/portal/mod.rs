//! Shared harness of the school-portal adapter tests: builds a provider from settings and
//! runs a login against a portal emulator (the sandbox's `login_hint` convenience stands
//! in for an existing portal session, so the authorize step answers at once).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

use homeroom_core::{LoginError, ProviderId, SystemClock, UpstreamIdentity};
use homeroom_providers::http::HttpClient;
use homeroom_providers::{
    BeginLogin, Callback, DynProvider, ProviderError, ProviderSettings, UpstreamFlow, build,
};
use homeroom_sandbox::{SandboxClient, SandboxKeys};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

pub const CLIENT_ID: &str = "homeroom-test";
pub const CLIENT_SECRET: &str = "test-secret-0123456789";
pub const CB: &str = "http://127.0.0.1:1/callback";
pub const NAME: &str = "Test Portal";

pub fn keys() -> SandboxKeys {
    static KEYS: OnceLock<SandboxKeys> = OnceLock::new();
    KEYS.get_or_init(|| SandboxKeys::generate().unwrap())
        .clone()
}

pub fn client() -> SandboxClient {
    SandboxClient {
        client_id: CLIENT_ID.into(),
        client_secret: CLIENT_SECRET.into(),
        redirect_uris: vec![CB.into()],
    }
}

/// Builds the provider or panics with its config problems.
pub fn provider(kind: &str, config: Value) -> DynProvider {
    let settings = ProviderSettings {
        id: ProviderId::new("portal"),
        display_name: NAME.into(),
        kind: kind.into(),
        config,
        tenant_domains: vec![],
    };
    let http = HttpClient::with_defaults().unwrap();
    build(&settings, &http, Arc::new(SystemClock))
        .unwrap_or_else(|p| panic!("config problems: {p:?}"))
}

/// Merges `extra` into `base` (both JSON objects).
pub fn with(mut base: Value, extra: Value) -> Value {
    if let (Some(b), Some(e)) = (base.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    base
}

fn random() -> String {
    homeroom_core::crypto::random_token(32).unwrap()
}

pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Begins a login, follows the authorize step as `hint` and returns the callback, the
/// flow and the authorize URL the adapter built.
pub async fn upstream(p: &DynProvider, hint: &str) -> (Callback, UpstreamFlow, url::Url) {
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
        login_hint: None,
    };
    let url = p.as_redirect().unwrap().begin(&begin).await.unwrap();
    let mut go = url.clone();
    go.query_pairs_mut().append_pair("login_hint", hint);
    let resp = http().get(go).send().await.unwrap();
    assert_eq!(
        resp.status(),
        302,
        "the emulator should answer a hinted login at once"
    );
    let loc = url::Url::parse(resp.headers()["location"].to_str().unwrap()).unwrap();
    assert!(loc.as_str().starts_with(CB));
    let q: HashMap<String, String> = loc.query_pairs().into_owned().collect();
    assert_eq!(q.get("state"), Some(&begin.state), "state echoed");
    let cb = Callback {
        code: q.get("code").cloned(),
        state: q.get("state").cloned(),
        iss: q.get("iss").cloned(),
        error: q.get("error").cloned(),
        error_description: q.get("error_description").cloned(),
    };
    (cb, flow, url)
}

/// A whole login as `hint`.
pub async fn login(p: &DynProvider, hint: &str) -> Result<UpstreamIdentity, ProviderError> {
    let (cb, flow, _) = upstream(p, hint).await;
    p.as_redirect().unwrap().finish(&cb, &flow).await
}

/// A whole login that must fail; returns the catalogue entry.
pub async fn refused(p: &DynProvider, hint: &str) -> LoginError {
    match login(p, hint).await {
        Ok(id) => panic!("login unexpectedly succeeded: {id:?}"),
        Err(e) => e.error,
    }
}

/// The query of the authorize URL as a map.
pub fn query(url: &url::Url) -> HashMap<String, String> {
    url.query_pairs().into_owned().collect()
}

pub fn exchange_failed() -> LoginError {
    LoginError::TokenExchangeFailed {
        provider: NAME.into(),
    }
}
