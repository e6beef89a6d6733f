//! Rate limits that stand in for a CDN's challenges. Keyed generic cell-rate limits (one
//! atomic step in the session store: in memory with `governor`, or one Redis script shared
//! by every instance) per client address, per network (/24 or /64), per trusted school
//! network, per tenant (every authorization request of a school district counts), and per
//! OAuth client at the token endpoint. Accounts are limited where passwords are checked
//! (`local`, `classroom`).
//!
//! Over the soft limit a browser gets a challenge page: a small proof of work its
//! JavaScript solves (`/static/challenge.js`), checked here, after which a short-lived pass
//! cookie bound to the client's network and browser lets it past the soft limit. Over the
//! hard limit, 429 with `Retry-After` and a page that says how long to wait. A whole school
//! behind one NAT address is listed as a trusted network of its tenant and gets its own,
//! larger budget.

use crate::AppState;
use crate::audit::{self, Ev};
use crate::cookies::{self, CookieValue};
use crate::middleware::ClientIp;
use crate::pages::html;
use crate::respond::{self, PageCtx};
use askama::Template;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use homeroom_core::crypto::{self, sha256_hex};
use homeroom_core::{LoginError, RefId};
use homeroom_session::{Gcra, GcraStep};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use sha2::{Digest, Sha256};
use std::net::IpAddr;

/// Base name of the pass cookie a solved challenge earns.
pub const PASS: &str = "hr_pass";

/// A rate: `per_minute` on average, `burst` requests ahead of it.
#[derive(Debug, Clone, Copy)]
pub struct Rate {
    pub per_minute: u64,
    pub burst: u64,
}

impl Rate {
    pub const fn new(per_minute: u64, burst: u64) -> Self {
        Self { per_minute, burst }
    }
    /// The store counts in whole milliseconds, so one key allows at most 60,000 a minute:
    /// a larger figure is that ceiling (never "no limit", which a zero interval would be).
    fn interval_ms(&self) -> u64 {
        (60_000 / self.per_minute.max(1)).max(1)
    }
}

/// Limits in force (the `[limits]` config section and tenants' trusted networks).
#[derive(Debug, Clone)]
pub struct LimitSettings {
    pub enabled: bool,
    pub ip_soft: Rate,
    pub ip_hard: Rate,
    pub net_soft: Rate,
    pub net_hard: Rate,
    pub trusted_soft: Rate,
    pub trusted_hard: Rate,
    /// Per OAuth client at the token endpoint (never per browser address).
    pub client: Rate,
    /// Per tenant: authorization requests of one school district, from every address
    /// (a ceiling on a whole district, above any real morning bell; over it, 429).
    pub tenant: Rate,
    /// School networks (tenants' `trusted_networks`).
    pub trusted_networks: Vec<ipnet::IpNet>,
    /// Leading zero bits the proof of work must have.
    pub challenge_bits: u32,
    /// Lifetime of a challenge and of the pass it earns, seconds.
    pub challenge_ttl: i64,
    pub pass_ttl: i64,
}

impl Default for LimitSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            ip_soft: Rate::new(60, 30),
            ip_hard: Rate::new(600, 120),
            net_soft: Rate::new(300, 100),
            net_hard: Rate::new(3000, 600),
            trusted_soft: Rate::new(20_000, 3000),
            trusted_hard: Rate::new(60_000, 10_000),
            // One app may serve a whole district at 8 a.m. (the surge benchmark hit 6,000/min
            // with 2,000 students); this guards against runaway clients and secret guessing.
            client: Rate::new(60_000, 10_000),
            // 1,000 authorization requests a second sustained (the most one key can count),
            // 20,000 ahead of that.
            tenant: Rate::new(60_000, 20_000),
            // Loopback is never a student: it is a reverse proxy on the same host (set
            // `trust_forwarded_for`) or a test. Counting it would throttle everyone at once.
            trusted_networks: ["127.0.0.0/8", "::1/128"]
                .iter()
                .filter_map(|n| n.parse().ok())
                .collect(),
            challenge_bits: 16,
            challenge_ttl: 300,
            pass_ttl: 900,
        }
    }
}

/// The network a client belongs to for limits: /24 for IPv4, /64 for IPv6.
pub fn network_of(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.0/24", o[0], o[1], o[2])
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
    }
}

/// Whether a path is a browser sign-in entry point the limits protect.
fn limited_path(path: &str) -> bool {
    path == "/oauth2/authorize" || path.starts_with("/login") || path.starts_with("/callback/")
}

type HmacSha256 = Hmac<Sha256>;

/// The key passes and challenges are signed with: one per deployment, shared by every
/// instance through the session store (created by whichever instance needs it first).
async fn secret(state: &AppState) -> Option<Vec<u8>> {
    if let Some(s) = state.limit_secret.get() {
        return Some(s.clone());
    }
    let fresh = crypto::random_token(32).ok()?;
    let b = state.sessions.backend();
    let _ = b
        .put_if_absent("secret:limits", fresh.as_bytes(), 30 * 24 * 3600)
        .await;
    let stored = b.get("secret:limits").await.ok()??;
    let _ = state.limit_secret.set(stored.clone());
    Some(stored)
}

fn sign(key: &[u8], payload: &str) -> Option<String> {
    let mut mac = HmacSha256::new_from_slice(key).ok()?;
    mac.update(payload.as_bytes());
    Some(URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()))
}

/// `payload.signature`, payload base64url JSON.
fn seal(key: &[u8], value: &serde_json::Value) -> Option<String> {
    let payload = URL_SAFE_NO_PAD.encode(value.to_string());
    let sig = sign(key, &payload)?;
    Some(format!("{payload}.{sig}"))
}

fn open(key: &[u8], sealed: &str) -> Option<serde_json::Value> {
    if sealed.len() > 2048 {
        return None;
    }
    let (payload, sig) = sealed.split_once('.')?;
    let want = sign(key, payload)?;
    if !crypto::ct_eq(want.as_bytes(), sig.as_bytes()) {
        return None;
    }
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()
}

/// What binds a challenge or pass to one client: its network and its browser.
fn binding(ip: IpAddr, headers: &HeaderMap) -> String {
    let ua = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    sha256_hex(&format!("{}|{ua}", network_of(ip)))[..32].to_owned()
}

/// Leading zero bits of SHA-256(`challenge` ":" `answer`).
pub fn work_bits(challenge: &str, answer: &str) -> u32 {
    let d = Sha256::digest(format!("{challenge}:{answer}").as_bytes());
    let mut bits = 0;
    for byte in d {
        if byte == 0 {
            bits += 8;
        } else {
            bits += byte.leading_zeros();
            break;
        }
    }
    bits
}

async fn step(state: &AppState, key: &str, rate: Rate) -> Gcra {
    match state
        .sessions
        .backend()
        .gcra(key, rate.interval_ms(), rate.burst)
        .await
    {
        Ok(g) => g,
        Err(e) => {
            // Fail open: a store outage must not lock every student out.
            tracing::warn!(error = %e, "rate limiter unavailable; request allowed");
            Gcra::Allowed
        }
    }
}

fn has_valid_pass(state: &AppState, key: &[u8], headers: &HeaderMap, ip: IpAddr) -> bool {
    let CookieValue::One(v) = cookies::read(headers, PASS, state.settings.secure_cookies) else {
        return false;
    };
    let Some(p) = open(key, &v) else { return false };
    p["kind"] == "pass"
        && p["exp"].as_i64().is_some_and(|e| e > state.now())
        && p["bind"].as_str() == Some(binding(ip, headers).as_str())
}

#[derive(Template)]
#[template(path = "challenge.html")]
struct ChallengePage<'a> {
    challenge: &'a str,
    bits: u32,
    back: &'a str,
}

/// The middleware on browser entry points.
pub async fn browser_limits(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let limits = &state.settings.limits;
    if !limits.enabled || !limited_path(req.uri().path()) {
        return next.run(req).await;
    }
    let ip = req
        .extensions()
        .get::<ClientIp>()
        .map(|c| c.0)
        .unwrap_or(IpAddr::from([127, 0, 0, 1]));
    let trusted = limits.trusted_networks.iter().find(|n| n.contains(&ip));
    let buckets: Vec<(&'static str, String, Rate, Rate)> = match trusted {
        Some(net) => vec![(
            "trusted",
            format!("rl:t:{net}"),
            limits.trusted_soft,
            limits.trusted_hard,
        )],
        None => vec![
            ("ip", format!("rl:ip:{ip}"), limits.ip_soft, limits.ip_hard),
            (
                "net",
                format!("rl:net:{}", network_of(ip)),
                limits.net_soft,
                limits.net_hard,
            ),
        ],
    };
    // The pass is checked before any bucket is charged (it reads nothing shared once the
    // key is known), so that every bucket of the request goes to the store in one step: hard
    // buckets first, then, for a browser without a valid pass, the soft ones. The first
    // limited bucket decides, exactly as one call per bucket did.
    let signing_key = secret(&state).await;
    let passed = signing_key
        .as_deref()
        .is_some_and(|k| has_valid_pass(&state, k, req.headers(), ip));
    let mut steps: Vec<GcraStep> = buckets
        .iter()
        .map(|(_, key, _, hard)| GcraStep {
            key: format!("{key}:h"),
            interval_ms: hard.interval_ms(),
            burst: hard.burst,
        })
        .collect();
    if signing_key.is_some() && !passed {
        steps.extend(buckets.iter().map(|(_, key, soft, _)| GcraStep {
            key: key.clone(),
            interval_ms: soft.interval_ms(),
            burst: soft.burst,
        }));
    }
    let limited = match state.sessions.backend().gcra_chain(&steps).await {
        Ok(l) => l,
        Err(e) => {
            // Fail open: a store outage must not lock every student out.
            tracing::warn!(error = %e, "rate limiter unavailable; request allowed");
            None
        }
    };
    let Some((i, retry_after_ms)) = limited else {
        return next.run(req).await;
    };
    if let Some((class, key, _, _)) = buckets.get(i) {
        crate::metrics::limit("block", class);
        let retry_after = retry_after_ms.div_ceil(1000).max(1);
        let ref_id = RefId::generate();
        let err = LoginError::TooManyAttempts { retry_after };
        audit::refusal(
            &state,
            &ref_id,
            &err,
            &format!("hard limit of the {class} bucket"),
            Ev::default(),
        );
        remember(&state, "blocked", class, key, retry_after).await;
        return respond::error_page(
            &err,
            &ref_id,
            state.now(),
            &PageCtx::from_headers(req.headers()),
        );
    }
    match (
        i.checked_sub(buckets.len()).and_then(|j| buckets.get(j)),
        signing_key,
    ) {
        (Some((class, bucket, _, _)), Some(signing_key)) => {
            crate::metrics::limit("challenge", class);
            remember(
                &state,
                "challenged",
                class,
                bucket,
                retry_after_ms.div_ceil(1000).max(1),
            )
            .await;
            challenge_page(&state, &signing_key, req.headers(), ip, req.uri()).await
        }
        _ => next.run(req).await,
    }
}

/// Keeps a list of challenged and blocked keys for the admin view (expires by itself).
async fn remember(state: &AppState, what: &str, class: &str, key: &str, secs: u64) {
    let entry = format!("{what}|{class}|{key}");
    let _ = state
        .sessions
        .backend()
        .set_add("rl:listed", &entry, secs.max(60))
        .await;
}

async fn challenge_page(
    state: &AppState,
    key: &[u8],
    headers: &HeaderMap,
    ip: IpAddr,
    uri: &http::Uri,
) -> Response {
    let back = uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/".into());
    let Ok(nonce) = crypto::random_token(16) else {
        return (StatusCode::SERVICE_UNAVAILABLE, "try again").into_response();
    };
    let limits = &state.settings.limits;
    let payload = serde_json::json!({
        "kind": "challenge", "n": nonce, "bits": limits.challenge_bits,
        "exp": state.now() + limits.challenge_ttl, "bind": binding(ip, headers),
    });
    let Some(challenge) = seal(key, &payload) else {
        return (StatusCode::SERVICE_UNAVAILABLE, "try again").into_response();
    };
    let mut r = html(
        StatusCode::TOO_MANY_REQUESTS,
        &ChallengePage {
            challenge: &challenge,
            bits: limits.challenge_bits,
            back: &back,
        },
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// Only local paths are accepted as the place to go back to (no open redirect).
fn safe_back(back: &str) -> &str {
    let ok = back.starts_with('/')
        && !back.starts_with("//")
        && !back.starts_with("/\\")
        && !back.contains(['\r', '\n']);
    if ok { back } else { "/" }
}

#[derive(serde::Deserialize)]
pub struct Answer {
    challenge: String,
    answer: String,
    back: String,
}

/// `POST /challenge`: checks the proof of work and hands out a pass.
pub async fn verify(
    State(state): State<AppState>,
    axum::Extension(ClientIp(ip)): axum::Extension<ClientIp>,
    headers: HeaderMap,
    axum::Form(a): axum::Form<Answer>,
) -> Response {
    let ref_id = RefId::generate();
    let fail = |why: &str| {
        crate::metrics::limit("challenge_failed", "any");
        audit::refusal(
            &state,
            &ref_id,
            &LoginError::ChallengeFailed,
            why,
            Ev::default(),
        );
        respond::error_page(
            &LoginError::ChallengeFailed,
            &ref_id,
            state.now(),
            &PageCtx::from_headers(&headers).retry(safe_back(&a.back), "Try again"),
        )
    };
    let Some(key) = secret(&state).await else {
        return fail("no signing secret");
    };
    let Some(c) = open(&key, &a.challenge) else {
        return fail("challenge not issued by Homeroom");
    };
    if c["kind"] != "challenge" || c["exp"].as_i64().is_none_or(|e| e <= state.now()) {
        return fail("challenge expired");
    }
    if c["bind"].as_str() != Some(binding(ip, &headers).as_str()) {
        return fail("challenge answered from another network or browser");
    }
    let bits = u32::try_from(c["bits"].as_u64().unwrap_or(32)).unwrap_or(32);
    if a.answer.len() > 32 || work_bits(&a.challenge, &a.answer) < bits {
        return fail("proof of work does not meet the difficulty");
    }
    let nonce = c["n"].as_str().unwrap_or("");
    match state
        .sessions
        .backend()
        .put_if_absent(
            &format!("pow:{nonce}"),
            b"1",
            u64::try_from(state.settings.limits.challenge_ttl).unwrap_or(300),
        )
        .await
    {
        Ok(true) => {}
        Ok(false) => return fail("challenge already used"),
        Err(e) => {
            tracing::warn!(error = %e, "challenge replay cache unavailable");
            return fail("replay cache unavailable");
        }
    }
    let pass = serde_json::json!({"kind": "pass", "exp": state.now() + state.settings.limits.pass_ttl, "bind": binding(ip, &headers)});
    let Some(sealed) = seal(&key, &pass) else {
        return fail("could not sign the pass");
    };
    audit::record(
        &state,
        Some(&ref_id),
        "limit.challenge_solved",
        Ev::default(),
    );
    let mut r = respond::redirect(StatusCode::SEE_OTHER, safe_back(&a.back));
    if let Ok(v) = HeaderValue::from_str(&cookies::set(
        PASS,
        &sealed,
        state.settings.secure_cookies,
        Some(state.settings.limits.pass_ttl),
    )) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

/// Per-tenant limit on authorization requests (every address counts). `Some(response)`
/// (429 with `Retry-After` and the "too many attempts" page) when over.
pub async fn tenant(
    state: &AppState,
    tenant: &homeroom_core::TenantId,
    headers: &HeaderMap,
    ref_id: &RefId,
) -> Option<Response> {
    let limits = &state.settings.limits;
    if !limits.enabled {
        return None;
    }
    let key = format!("rl:tenant:{tenant}");
    let Gcra::Limited { retry_after_ms } = step(state, &key, limits.tenant).await else {
        return None;
    };
    crate::metrics::limit("block", "tenant");
    let retry_after = retry_after_ms.div_ceil(1000).max(1);
    let err = LoginError::TooManyAttempts { retry_after };
    audit::refusal(
        state,
        ref_id,
        &err,
        "hard limit of the tenant bucket",
        Ev {
            tenant: Some(tenant.clone()),
            ..Ev::default()
        },
    );
    remember(state, "blocked", "tenant", &key, retry_after).await;
    Some(respond::error_page(
        &err,
        ref_id,
        state.now(),
        &PageCtx::from_headers(headers),
    ))
}

/// Per-client limit at the token endpoint (keyed by the client id claimed, before
/// authentication, so guessing secrets is limited too). `Some(response)` when over.
pub async fn token_endpoint(state: &AppState, client_id: &str) -> Option<Response> {
    let limits = &state.settings.limits;
    if !limits.enabled || client_id.is_empty() {
        return None;
    }
    let key = format!("rl:client:{}", sha256_hex(client_id));
    match step(state, &key, limits.client).await {
        Gcra::Allowed => None,
        Gcra::Limited { retry_after_ms } => {
            crate::metrics::limit("block", "client");
            let secs = retry_after_ms.div_ceil(1000).max(1);
            remember(state, "blocked", "client", &key, secs).await;
            let mut r = respond::json_error(
                StatusCode::TOO_MANY_REQUESTS,
                "slow_down",
                "too many requests for this client",
            );
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
            Some(r)
        }
    }
}

/// The keys currently challenged or blocked: (what, class, key).
pub async fn listed(state: &AppState) -> Vec<(String, String, String)> {
    let members = state
        .sessions
        .backend()
        .set_members("rl:listed")
        .await
        .unwrap_or_default();
    members
        .into_iter()
        .filter_map(|m| {
            let mut it = m.splitn(3, '|');
            Some((
                it.next()?.to_owned(),
                it.next()?.to_owned(),
                it.next()?.to_owned(),
            ))
        })
        .collect()
}

/// The listed keys one tenant's admins may see and lift: address keys (`ip`, `net`,
/// trusted networks: an address is shared by every tenant signing in from it), the tenant's
/// own key and its own apps' keys; never another tenant's tenant or app keys.
pub async fn listed_for(
    state: &AppState,
    tenant: &homeroom_core::TenantId,
) -> Vec<(String, String, String)> {
    let own_tenant = format!("rl:tenant:{tenant}");
    let own_clients: std::collections::HashSet<String> = state
        .directory
        .list_apps(Some(tenant))
        .await
        .unwrap_or_default()
        .iter()
        .map(|a| format!("rl:client:{}", sha256_hex(a.client_id.as_str())))
        .collect();
    listed(state)
        .await
        .into_iter()
        .filter(|(_, _, key)| {
            key.starts_with("rl:ip:")
                || key.starts_with("rl:net:")
                || key.starts_with("rl:t:")
                || *key == own_tenant
                || own_clients.contains(key)
        })
        .collect()
}

/// Lifts a limit on a key (both its soft and hard buckets) and takes it off the list.
pub async fn lift(state: &AppState, key: &str) -> bool {
    let b = state.sessions.backend();
    let soft = b.delete(key).await.unwrap_or(false);
    let hard = b.delete(&format!("{key}:h")).await.unwrap_or(false);
    let mut unlisted = false;
    for m in b.set_members("rl:listed").await.unwrap_or_default() {
        if m.splitn(3, '|').nth(2) == Some(key) {
            unlisted |= b.set_remove("rl:listed", &m).await.unwrap_or(false);
        }
    }
    soft || hard || unlisted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_above_one_per_millisecond_are_capped_not_unlimited() {
        assert_eq!(Rate::new(60, 1).interval_ms(), 1000);
        assert_eq!(Rate::new(60_000, 1).interval_ms(), 1);
        assert_eq!(Rate::new(120_000, 1).interval_ms(), 1);
        assert_eq!(Rate::new(0, 1).interval_ms(), 60_000);
    }

    #[test]
    fn networks_are_slash_24_and_slash_64() {
        assert_eq!(
            network_of("203.0.113.77".parse().unwrap()),
            "203.0.113.0/24"
        );
        assert_eq!(
            network_of("2001:db8:1:2:3:4:5:6".parse().unwrap()),
            "2001:db8:1:2::/64"
        );
    }

    #[test]
    fn sealed_values_resist_tampering() {
        let key = b"0123456789abcdef0123456789abcdef";
        let s = seal(key, &serde_json::json!({"kind": "pass", "exp": 5})).unwrap();
        assert_eq!(open(key, &s).unwrap()["exp"], 5);
        let (p, sig) = s.split_once('.').unwrap();
        let forged = format!(
            "{}.{sig}",
            URL_SAFE_NO_PAD.encode(r#"{"kind":"pass","exp":99999999999}"#)
        );
        assert!(open(key, &forged).is_none());
        assert!(open(b"another key, another deployment!", &s).is_none());
        assert!(open(key, &format!("{p}.")).is_none());
    }

    #[test]
    fn only_local_paths_are_returned_to() {
        assert_eq!(safe_back("/oauth2/authorize?x=1"), "/oauth2/authorize?x=1");
        for bad in [
            "//evil.example/",
            "https://evil.example/",
            "/\\evil.example",
            "evil",
        ] {
            assert_eq!(safe_back(bad), "/", "{bad}");
        }
    }

    #[test]
    fn work_bits_counts_leading_zeros() {
        let mut n = 0u64;
        while work_bits("c", &n.to_string()) < 8 {
            n += 1;
        }
        assert!(work_bits("c", &n.to_string()) >= 8);
        assert!(n < 100_000);
    }
}
