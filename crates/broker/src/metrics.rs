//! Prometheus metrics at `/metrics`: logins by provider, outcome and catalogue code;
//! request latency per route; loop breaks; upstream faults; rate-limit challenges and
//! blocks. Labels are bounded: provider ids and app ids come from configuration, codes
//! from the catalogue, routes are templates (`/callback/{provider}`), never raw paths,
//! emails, usernames or addresses (LOG-06).
//!
//! One recorder per process, installed on first use; every `AppState` in the process
//! (tests run several) reports into it.

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, header};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
use std::time::Instant;

fn handle() -> Option<&'static PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(&[
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                ])
                .ok()?
                .build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok()?;
            Some(handle)
        })
        .as_ref()
}

/// Installs the recorder (idempotent). Call once at start so counters exist from the first
/// request.
pub fn install() {
    let _ = handle();
}

/// `GET /metrics`.
pub async fn render() -> Response {
    let body = handle().map(|h| h.render()).unwrap_or_default();
    let mut r = body.into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    r
}

/// Request latency per route template and status class.
pub async fn track(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let started = Instant::now();
    let resp = next.run(req).await;
    let status = match resp.status().as_u16() {
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    };
    metrics::histogram!("homeroom_http_request_duration_seconds", "route" => route, "status" => status)
        .record(started.elapsed().as_secs_f64());
    resp
}

/// A finished login attempt (`success`, or `refused` with its code).
pub fn login(provider: Option<&str>, outcome: &'static str, code: Option<&str>) {
    metrics::counter!(
        "homeroom_logins_total",
        "provider" => provider.unwrap_or("none").to_owned(),
        "outcome" => outcome,
        "code" => code.unwrap_or("none").to_owned()
    )
    .increment(1);
}

/// A redirect loop was broken (`app` or `upstream`).
pub fn loop_break(place: &'static str) {
    metrics::counter!("homeroom_loop_breaks_total", "where" => place).increment(1);
}

/// An upstream call timed out or failed.
pub fn upstream_fault(provider: &str, code: &str) {
    metrics::counter!("homeroom_upstream_faults_total", "provider" => provider.to_owned(), "code" => code.to_owned())
        .increment(1);
}

/// A rate limit challenged or blocked a request (`challenge` or `block`), by key class.
pub fn limit(action: &'static str, class: &'static str) {
    metrics::counter!("homeroom_rate_limit_total", "action" => action, "class" => class)
        .increment(1);
}
