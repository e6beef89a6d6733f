//! Small in-process caches on hot paths (introspection, userinfo, the token endpoint):
//!
//! - verified access tokens: a token whose signature and claims were checked once is not
//!   checked again until it expires. Revocation stays immediate: the token family is still
//!   looked up on every use.
//! - apps by client id, for 30 s: several instances and the admin API may change an app;
//!   30 s bounds how long an old registration is served.
//!
//! Both are bounded (cleared when full) and use `std::sync::Mutex`: nothing awaits while
//! holding them and the critical sections are a hash lookup.

use homeroom_core::ClientId;
use homeroom_directory::AppRecord;
use std::collections::HashMap;
use std::sync::Mutex;

const MAX_TOKENS: usize = 100_000;
const MAX_APPS: usize = 10_000;
const APP_TTL_SECS: i64 = 30;

/// See the module docs. One per `AppState`.
#[derive(Default)]
pub struct Caches {
    /// SHA-256 of the token -> (claims, exp).
    tokens: Mutex<HashMap<[u8; 32], (serde_json::Value, i64)>>,
    /// client id -> (record or known-absent, fetched at).
    apps: Mutex<HashMap<ClientId, (Option<AppRecord>, i64)>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn key(token: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(token.as_bytes()).into()
}

impl Caches {
    pub fn verified_token(&self, token: &str, now: i64) -> Option<serde_json::Value> {
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

    pub fn remember_token(&self, token: &str, claims: &serde_json::Value, exp: i64) {
        let mut map = lock(&self.tokens);
        if map.len() >= MAX_TOKENS {
            map.clear();
        }
        map.insert(key(token), (claims.clone(), exp));
    }

    /// `Some(cached)` when fresh (the inner `None` means "known not to exist").
    pub fn app(&self, id: &ClientId, now: i64) -> Option<Option<AppRecord>> {
        let map = lock(&self.apps);
        map.get(id)
            .filter(|(_, at)| now - at < APP_TTL_SECS)
            .map(|(a, _)| a.clone())
    }

    pub fn remember_app(&self, id: &ClientId, app: Option<AppRecord>, now: i64) {
        let mut map = lock(&self.apps);
        if map.len() >= MAX_APPS {
            map.clear();
        }
        map.insert(id.clone(), (app, now));
    }

    /// Drops every cached app (after an admin change on this instance).
    pub fn forget_apps(&self) {
        lock(&self.apps).clear();
    }
}
