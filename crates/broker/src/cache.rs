//! Small in-process caches on hot paths (introspection, userinfo, the token endpoint):
//!
//! - verified access tokens: a token whose signature and claims were checked once, or that
//!   this instance signed itself, is not checked again until it expires. Revocation stays
//!   immediate: the token family is still looked up on every use.
//! - apps by client id, for 30 s: several instances and the admin API may change an app;
//!   30 s bounds how long an old registration is served.
//! - tenants by id and by email domain, for 30 s likewise (tenants come from the
//!   configuration import; the login pipeline reads them several times per sign-in).
//!
//! - the discovery document, serialised once with its `ETag` (it depends on settings only;
//!   the JWKS bytes live with the key set, which is rebuilt on rotation).
//!
//! The first two are bounded (cleared when full) and use `std::sync::Mutex`: nothing awaits while
//! holding them and the critical sections are a hash lookup.

use axum::body::Bytes;
use homeroom_core::ClientId;
use homeroom_core::TenantId;
use homeroom_directory::{AppRecord, Tenant};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

const MAX_TOKENS: usize = 100_000;
const MAX_APPS: usize = 10_000;
const APP_TTL_SECS: i64 = 30;
const MAX_TENANTS: usize = 10_000;

/// Verified claims, shared between the cache and the requests that use them.
pub type Claims = std::sync::Arc<serde_json::Value>;

/// An app record shared by every request that authenticates or names the client.
pub type SharedApp = Arc<AppRecord>;

/// See the module docs. One per `AppState`.
#[derive(Default)]
pub struct Caches {
    /// SHA-256 of the token -> (claims, exp).
    tokens: Mutex<HashMap<[u8; 32], (Claims, i64)>>,
    /// client id -> (record or known-absent, fetched at).
    apps: Mutex<HashMap<ClientId, (Option<SharedApp>, i64)>>,
    /// tenant id -> (record or known-absent, fetched at).
    tenants: Mutex<HashMap<TenantId, (Option<Tenant>, i64)>>,
    /// email domain -> (tenant or known-absent, fetched at).
    domains: Mutex<HashMap<String, (Option<Tenant>, i64)>>,
    /// The discovery document's bytes and entity tag.
    discovery: OnceLock<(Bytes, String)>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn key(token: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(token.as_bytes()).into()
}

impl Caches {
    pub fn verified_token(&self, token: &str, now: i64) -> Option<Claims> {
        let k = key(token);
        let mut map = lock(&self.tokens);
        match map.get(&k) {
            Some((claims, exp)) if *exp > now => Some(claims.clone()),
            Some(_) => {
                map.remove(&k);
                None
            }
            None => None,
        }
    }

    pub fn remember_token(&self, token: &str, claims: &Claims, exp: i64) {
        let mut map = lock(&self.tokens);
        if map.len() >= MAX_TOKENS {
            map.clear();
        }
        map.insert(key(token), (claims.clone(), exp));
    }

    /// `Some(cached)` when fresh (the inner `None` means "known not to exist").
    pub fn app(&self, id: &ClientId, now: i64) -> Option<Option<SharedApp>> {
        let map = lock(&self.apps);
        map.get(id)
            .filter(|(_, at)| now - at < APP_TTL_SECS)
            .map(|(a, _)| a.clone())
    }

    pub fn remember_app(&self, id: &ClientId, app: Option<SharedApp>, now: i64) {
        let mut map = lock(&self.apps);
        if map.len() >= MAX_APPS {
            map.clear();
        }
        map.insert(id.clone(), (app, now));
    }

    /// A tenant by id, when fresh (the inner `None` means "known not to exist").
    pub fn tenant(&self, id: &TenantId, now: i64) -> Option<Option<Tenant>> {
        fresh(&self.tenants, id, now)
    }

    pub fn remember_tenant(&self, id: &TenantId, t: Option<Tenant>, now: i64) {
        remember(&self.tenants, id.clone(), t, now);
    }

    /// The tenant of an email domain (lower case), when fresh.
    pub fn tenant_by_domain(&self, domain: &str, now: i64) -> Option<Option<Tenant>> {
        fresh(&self.domains, domain, now)
    }

    pub fn remember_domain(&self, domain: &str, t: Option<Tenant>, now: i64) {
        remember(&self.domains, domain.to_owned(), t, now);
    }

    /// The discovery document serialised (built by `build` on first use) and its tag.
    pub fn discovery(&self, build: impl FnOnce() -> serde_json::Value) -> (&Bytes, &str) {
        let (body, etag) = self.discovery.get_or_init(|| {
            let body = Bytes::from(build().to_string());
            let etag = crate::keys::etag_of(&body);
            (body, etag)
        });
        (body, etag)
    }

    /// Drops every cached app (after an admin change on this instance).
    pub fn forget_apps(&self) {
        lock(&self.apps).clear();
    }
}

fn fresh<K, Q, V>(map: &Mutex<HashMap<K, (Option<V>, i64)>>, k: &Q, now: i64) -> Option<Option<V>>
where
    K: std::borrow::Borrow<Q> + std::hash::Hash + Eq,
    Q: std::hash::Hash + Eq + ?Sized,
    V: Clone,
{
    lock(map)
        .get(k)
        .filter(|(_, at)| now - at < APP_TTL_SECS)
        .map(|(v, _)| v.clone())
}

fn remember<K: std::hash::Hash + Eq, V>(
    map: &Mutex<HashMap<K, (Option<V>, i64)>>,
    k: K,
    v: Option<V>,
    now: i64,
) {
    let mut map = lock(map);
    if map.len() >= MAX_TENANTS {
        map.clear();
    }
    map.insert(k, (v, now));
}
