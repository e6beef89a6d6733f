//! Detectors that turn help-desk tickets into explanations: redirect loops between a
//! browser and an app (or an upstream provider), and a circuit breaker per provider.
//! Counters live in the session store, so they are shared by every instance.
//!
//! A browser is recognised by its long-lived `hr_browser` cookie (random, carries no
//! data), minted on its first visit and counted under that new id at once. Browsers are
//! never pooled by address and user agent: a whole school behind one NAT address on
//! identical Chromebooks would otherwise look like one looping browser. A browser that
//! blocks cookies cannot loop through Homeroom (the return hop needs the flow cookie and
//! stops at the "cookies blocked" page), so minting a fresh id each time is harmless.

use crate::AppState;
use crate::cookies::{self, CookieValue};
use axum::extract::ConnectInfo;
use homeroom_core::LoginError;
use homeroom_core::crypto::{self, sha256_hex};
use homeroom_session::StoreError;
use http::{HeaderMap, HeaderValue};
use std::net::{IpAddr, SocketAddr};

/// Base name of the browser-recognition cookie.
pub const BROWSER: &str = "hr_browser";

/// The client's address: the socket peer, or the first `X-Forwarded-For` entry when the
/// deployment says a proxy in front sets it.
pub fn client_ip(state: &AppState, headers: &HeaderMap, ext: &http::Extensions) -> IpAddr {
    if state.settings.trust_forwarded_for
        && let Some(ip) = headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .and_then(|v| v.trim().parse::<IpAddr>().ok())
    {
        return ip;
    }
    ext.get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(IpAddr::from([127, 0, 0, 1]))
}

/// The browser's key for counters, and a `Set-Cookie` value when a new id was minted.
pub fn browser_key(
    state: &AppState,
    headers: &HeaderMap,
    ip: IpAddr,
) -> (String, Option<HeaderValue>) {
    if let CookieValue::One(v) = cookies::read(headers, BROWSER, state.settings.secure_cookies)
        && (20..=64).contains(&v.len())
    {
        return (format!("b:{}", sha256_hex(&v)), None);
    }
    match crypto::random_token(24) {
        Ok(id) => {
            let cookie = cookies::set(
                BROWSER,
                &id,
                state.settings.secure_cookies,
                Some(400 * 24 * 3600),
            );
            (
                format!("b:{}", sha256_hex(&id)),
                HeaderValue::from_str(&cookie).ok(),
            )
        }
        // No randomness: count under the address (never reached in practice).
        Err(_) => (format!("a:{ip}"), None),
    }
}

async fn count(state: &AppState, key: &str, window: u64) -> Result<u64, StoreError> {
    let n = state.sessions.backend().incr(key, 1, window.max(1)).await?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// Counts one authorization request of this browser for this app; a refusal when the
/// browser has been sent to sign in for it more than the limit within the window.
pub async fn app_hop(
    state: &AppState,
    browser: &str,
    client: &str,
    app_name: &str,
) -> Result<Option<LoginError>, StoreError> {
    let (max, window) = (state.settings.loop_max, state.settings.loop_window_secs);
    let n = count(state, &format!("loop:{browser}:{client}"), window).await?;
    Ok((n > max).then(|| LoginError::RedirectLoop {
        app: app_name.to_owned(),
        count: n,
        window_secs: window,
    }))
}

/// Counts one redirect of this browser to this provider.
pub async fn upstream_hop(
    state: &AppState,
    browser: &str,
    provider: &str,
    display: &str,
) -> Result<Option<LoginError>, StoreError> {
    let (max, window) = (state.settings.loop_max, state.settings.loop_window_secs);
    let n = count(state, &format!("uploop:{browser}:{provider}"), window).await?;
    Ok((n > max).then(|| LoginError::UpstreamLoop {
        provider: display.to_owned(),
        count: n,
        window_secs: window,
    }))
}

/// Whether the provider's circuit is open (too many recent failures), with the seconds
/// until it closes.
pub async fn circuit_open(state: &AppState, provider: &str, display: &str) -> Option<LoginError> {
    let raw = state
        .sessions
        .backend()
        .get(&format!("cb:{provider}"))
        .await
        .ok()??;
    let failures: u64 = std::str::from_utf8(&raw).ok()?.trim().parse().ok()?;
    (failures >= state.settings.circuit_threshold).then(|| LoginError::CircuitOpen {
        provider: display.to_owned(),
        retry_after: state.settings.circuit_open_secs,
    })
}

/// Records a timeout or unreachable upstream; enough of them within the window open the
/// circuit for `circuit_open_secs`.
pub async fn upstream_failed(state: &AppState, provider: &str, code: &str) {
    crate::metrics::upstream_fault(provider, code);
    if let Err(e) = state
        .sessions
        .backend()
        .incr(
            &format!("cb:{provider}"),
            1,
            state.settings.circuit_open_secs.max(1),
        )
        .await
    {
        tracing::warn!(error = %e, "circuit breaker counter not updated");
    }
}

/// Whether an error counts against the provider's circuit.
pub fn is_upstream_fault(e: &LoginError) -> bool {
    matches!(
        e,
        LoginError::UpstreamTimeout { .. }
            | LoginError::UpstreamUnavailable { .. }
            | LoginError::ResponseTooLarge { .. }
    )
}
