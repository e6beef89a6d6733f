//! Cross-cutting response headers: a strict Content-Security-Policy (no inline script, no
//! framing), no referrer (codes in URLs never leak, RP-13), no MIME sniffing, and
//! `no-store` unless a handler chose a caching policy.

use crate::AppState;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use http::{HeaderValue, header};

pub const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self' data:; script-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The client's address as the broker sees it (socket peer, or `X-Forwarded-For` when
/// trusted), put into every request's extensions for handlers and limits.
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub std::net::IpAddr);

pub async fn client_ip(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let ip = crate::guards::client_ip(&state, req.headers(), req.extensions());
    req.extensions_mut().insert(ClientIp(ip));
    next.run(req).await
}

pub async fn security_headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}
