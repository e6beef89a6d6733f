//! One place that turns outcomes into HTTP: the error page every refusal renders (with the
//! "tell IT" box and the `X-Homeroom-Ref` header), error redirects to apps, and OAuth JSON
//! errors (`Cache-Control: no-store`), and public JSON documents serialised once (discovery,
//! JWKS) with an `ETag` and `304 Not Modified`.

use crate::pages::ErrorPage;
use askama::Template;
use axum::response::{Html, IntoResponse, Response};
use homeroom_core::{LoginError, RefId};
use http::{HeaderMap, HeaderValue, StatusCode, header};

/// A public JSON document that was serialised once: served as is with `Cache-Control:
/// public, max-age=300` and `ETag`; `304 Not Modified` (no body) when the request's
/// `If-None-Match` names that tag (or is `*`).
pub fn cached_json(headers: &HeaderMap, body: &axum::body::Bytes, etag: &str) -> Response {
    let matches = headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == etag || t == "*");
    let mut resp = if matches {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body.clone(),
        )
            .into_response()
    };
    let h = resp.headers_mut();
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    if let Ok(v) = HeaderValue::from_str(etag) {
        h.insert(header::ETAG, v);
    }
    resp
}

/// Header carrying the attempt's reference id on every response of an attempt.
pub const REF_HEADER: &str = "x-homeroom-ref";

/// What the error page shows besides the catalogue entry.
#[derive(Debug, Default, Clone)]
pub struct PageCtx {
    pub app: String,
    pub provider: String,
    pub browser: String,
    pub retry_href: String,
    pub retry_label: String,
}

impl PageCtx {
    pub fn from_headers(headers: &HeaderMap) -> Self {
        let browser = headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("unknown")
            .chars()
            .take(200)
            .collect();
        Self {
            browser,
            ..Default::default()
        }
    }
    pub fn app(mut self, app: impl Into<String>) -> Self {
        self.app = app.into();
        self
    }
    pub fn provider(mut self, p: impl Into<String>) -> Self {
        self.provider = p.into();
        self
    }
    pub fn retry(mut self, href: impl Into<String>, label: impl Into<String>) -> Self {
        self.retry_href = href.into();
        self.retry_label = label.into();
        self
    }
}

/// Renders the error page for `err`.
pub fn error_page(err: &LoginError, ref_id: &RefId, now: i64, ctx: &PageCtx) -> Response {
    let page = ErrorPage {
        title: err.title(),
        message: err.student_message(),
        guidance: err.it_guidance(),
        code: err.code(),
        ref_id: ref_id.as_str(),
        time: homeroom_core::clock::rfc3339(now),
        app: &ctx.app,
        provider: &ctx.provider,
        browser: &ctx.browser,
        retry_href: &ctx.retry_href,
        retry_label: &ctx.retry_label,
    };
    let status = StatusCode::from_u16(err.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
    let body = page
        .render()
        .unwrap_or_else(|_| format!("{} ({})", err.title(), ref_id));
    let mut resp = (status, Html(body)).into_response();
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(ref_id.as_str()) {
        h.insert(REF_HEADER, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(secs) = err.retry_after()
        && let Ok(v) = HeaderValue::from_str(&secs.to_string())
    {
        h.insert(header::RETRY_AFTER, v);
    }
    resp
}

/// Appends query parameters to a (registered) redirect URI, keeping its own query.
pub fn with_query(base: &str, params: &[(&str, &str)]) -> String {
    let mut out = base.to_owned();
    let mut sep = if base.contains('?') { '&' } else { '?' };
    for (k, v) in params {
        out.push(sep);
        sep = '&';
        out.push_str(&url::form_urlencoded::byte_serialize(k.as_bytes()).collect::<String>());
        out.push('=');
        out.push_str(&url::form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>());
    }
    out
}

/// A redirect (302 for GET flows, 303 after a POST).
pub fn redirect(status: StatusCode, location: &str) -> Response {
    let mut resp = status.into_response();
    if let Ok(v) = HeaderValue::from_str(location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// An authorization error sent back to the app's verified redirect URI (RFC 6749
/// §4.1.2.1), with `state` echoed and `iss` (RFC 9207).
pub fn app_error_redirect(
    redirect_uri: &str,
    error: &str,
    description: &str,
    state: Option<&str>,
    issuer: &str,
    ref_id: &RefId,
) -> Response {
    let mut params = vec![("error", error), ("error_description", description)];
    if let Some(s) = state {
        params.push(("state", s));
    }
    params.push(("iss", issuer));
    let mut resp = redirect(StatusCode::FOUND, &with_query(redirect_uri, &params));
    if let Ok(v) = HeaderValue::from_str(ref_id.as_str()) {
        resp.headers_mut().insert(REF_HEADER, v);
    }
    resp
}

/// An OAuth JSON error (token, introspection, revocation endpoints).
pub fn json_error(status: StatusCode, error: &str, description: &str) -> Response {
    let body = serde_json::json!({ "error": error, "error_description": description });
    let mut resp = (status, axum::Json(body)).into_response();
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    if status == StatusCode::UNAUTHORIZED && error == "invalid_client" {
        h.insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"homeroom\""),
        );
    }
    resp
}

/// JSON success with `Cache-Control: no-store`.
pub fn json_no_store<T: serde::Serialize>(value: T) -> Response {
    let mut resp = axum::Json(value).into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp.headers_mut()
        .insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_json_answers_304_for_its_tag_only() {
        let body = axum::body::Bytes::from_static(b"{\"a\":1}");
        let tag = "\"abc\"";
        let plain = cached_json(&HeaderMap::new(), &body, tag);
        assert_eq!(plain.status(), StatusCode::OK);
        assert_eq!(plain.headers()[header::ETAG], tag);
        assert_eq!(
            plain.headers()[header::CACHE_CONTROL],
            "public, max-age=300"
        );
        assert_eq!(plain.headers()[header::CONTENT_TYPE], "application/json");
        for (inm, want) in [
            ("\"abc\"", StatusCode::NOT_MODIFIED),
            ("W/\"abc\"", StatusCode::NOT_MODIFIED),
            ("\"x\", \"abc\"", StatusCode::NOT_MODIFIED),
            ("*", StatusCode::NOT_MODIFIED),
            ("\"abd\"", StatusCode::OK),
        ] {
            let mut h = HeaderMap::new();
            h.insert(header::IF_NONE_MATCH, HeaderValue::from_static(inm));
            let r = cached_json(&h, &body, tag);
            assert_eq!(r.status(), want, "{inm}");
            assert_eq!(r.headers()[header::ETAG], tag);
        }
    }

    #[test]
    fn query_is_appended_and_encoded() {
        assert_eq!(
            with_query("https://a/cb", &[("code", "x y"), ("state", "&")]),
            "https://a/cb?code=x+y&state=%26"
        );
        assert_eq!(
            with_query("https://a/cb?k=1", &[("code", "c")]),
            "https://a/cb?k=1&code=c"
        );
    }

    #[test]
    fn error_page_escapes_and_carries_ref() {
        let err = LoginError::DomainMismatch {
            used: "\"><img src=x onerror=alert(1)>@gmail.com".into(),
            expected: vec!["d.org".into()],
        };
        let r = RefId::new("HR-TEST");
        let resp = error_page(&err, &r, 0, &PageCtx::default());
        assert_eq!(resp.status(), StatusCode::FORBIDDEN);
        assert_eq!(resp.headers()[REF_HEADER], "HR-TEST");
    }
}
