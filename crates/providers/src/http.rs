//! The one outbound HTTP client every adapter uses to talk to upstreams.
//!
//! [`HttpClient`] owns the safety limits for hostile or slow upstreams (RP-12): a connect
//! timeout and a total timeout per request, redirects disabled (an upstream never moves
//! our code or secret somewhere else), and a cap on response bodies that is enforced while
//! reading, chunk by chunk, so a 50 MB answer is never buffered. It also implements
//! openidconnect's [`AsyncHttpClient`](openidconnect::AsyncHttpClient) so that crate's
//! flows run under the same limits. It never interprets responses: adapters do.

use crate::ProviderError;
use homeroom_core::LoginError;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// Default connect and total timeout for one upstream request.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default cap on an upstream response body (1 MiB).
pub const DEFAULT_MAX_BODY: usize = 1024 * 1024;

/// Limits of an [`HttpClient`].
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    /// Connect timeout and total per-request timeout (connect + headers + body).
    pub timeout: Duration,
    /// Largest response body accepted, in bytes.
    pub max_body: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            timeout: DEFAULT_TIMEOUT,
            max_body: DEFAULT_MAX_BODY,
        }
    }
}

/// Why an upstream request failed, before any protocol meaning is attached.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The request did not complete within the timeout.
    #[error("upstream did not answer within {0:?}")]
    Timeout(Duration),
    /// The upstream could not be reached (DNS, TCP, TLS).
    #[error("upstream unreachable: {0}")]
    Connect(String),
    /// The response body exceeded the cap.
    #[error("upstream response larger than {0} bytes")]
    TooLarge(usize),
    /// Any other transport failure (bad request construction, broken body).
    #[error("upstream request failed: {0}")]
    Other(String),
}

impl HttpError {
    /// Maps the failure to its catalogue entry for `provider` (display name).
    pub fn into_provider_error(self, provider: &str) -> ProviderError {
        let provider_s = provider.to_owned();
        let error = match &self {
            HttpError::Timeout(_) => LoginError::UpstreamTimeout {
                provider: provider_s,
            },
            HttpError::TooLarge(_) => LoginError::ResponseTooLarge {
                provider: provider_s,
            },
            HttpError::Connect(_) | HttpError::Other(_) => LoginError::UpstreamUnavailable {
                provider: provider_s,
            },
        };
        ProviderError::new(error, self.to_string())
    }

    fn from_reqwest(e: reqwest::Error, timeout: Duration) -> Self {
        if e.is_timeout() {
            HttpError::Timeout(timeout)
        } else if e.is_connect() {
            HttpError::Connect(e.to_string())
        } else {
            HttpError::Other(e.to_string())
        }
    }
}

/// A response read in full under the body cap.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// HTTP status code.
    pub status: u16,
    /// `Content-Type` header, if any.
    pub content_type: Option<String>,
    /// The body (at most the cap).
    pub body: Vec<u8>,
    /// The response's `Date` header as Unix seconds (the peer's clock), if present.
    pub date: Option<i64>,
    /// The `Location` header of a redirect (redirects are never followed), if present.
    pub location: Option<String>,
}

impl HttpResponse {
    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// Outbound HTTP client with timeouts, no redirects and a body cap. Cheap to clone (the
/// connection pool is shared); [`HttpClient::with_timeout`] gives a per-provider view.
#[derive(Debug, Clone)]
pub struct HttpClient {
    inner: reqwest::Client,
    limits: HttpLimits,
}

impl HttpClient {
    /// Builds a client with the given limits (rustls, redirects disabled).
    pub fn new(limits: HttpLimits) -> Result<Self, HttpError> {
        let inner = reqwest::Client::builder()
            .connect_timeout(limits.timeout)
            .timeout(limits.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("homeroom/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| HttpError::Other(e.to_string()))?;
        Ok(Self { inner, limits })
    }

    /// reqwest's default client (it follows redirects) with default limits: only for
    /// constructors that cannot return an error, when [`HttpClient::with_defaults`] failed.
    pub fn fallback() -> Self {
        Self {
            inner: reqwest::Client::default(),
            limits: HttpLimits::default(),
        }
    }

    /// A client with default limits (5 s, 1 MiB).
    pub fn with_defaults() -> Result<Self, HttpError> {
        Self::new(HttpLimits::default())
    }

    /// The same connection pool with another total timeout per request.
    pub fn with_timeout(&self, timeout: Duration) -> Self {
        Self {
            inner: self.inner.clone(),
            limits: HttpLimits {
                timeout,
                ..self.limits
            },
        }
    }

    /// The same connection pool with another body cap.
    pub fn with_max_body(&self, max_body: usize) -> Self {
        Self {
            inner: self.inner.clone(),
            limits: HttpLimits {
                max_body,
                ..self.limits
            },
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> HttpLimits {
        self.limits
    }

    /// `GET url`, with an optional bearer token and `Accept: application/json`.
    pub async fn get(&self, url: &str, bearer: Option<&str>) -> Result<HttpResponse, HttpError> {
        let mut req = self
            .inner
            .get(url)
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(token) = bearer {
            req = req.bearer_auth(token);
        }
        self.send(req).await
    }

    /// `POST url` with a form body and optional HTTP Basic credentials.
    pub async fn post_form(
        &self,
        url: &str,
        form: &[(&str, &str)],
        basic: Option<(&str, &str)>,
    ) -> Result<HttpResponse, HttpError> {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let mut req = self
            .inner
            .post(url)
            .header(reqwest::header::ACCEPT, "application/json")
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(body);
        if let Some((user, pass)) = basic {
            // RFC 6749 §2.3.1: both parts are form-urlencoded before Basic encoding.
            let enc =
                |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
            req = req.basic_auth(enc(user), Some(enc(pass)));
        }
        self.send(req).await
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<HttpResponse, HttpError> {
        let req = req
            .timeout(self.limits.timeout)
            .build()
            .map_err(|e| HttpError::Other(e.to_string()))?;
        self.execute(req).await
    }

    /// Sends a prepared request and reads the body under the cap, all within the timeout.
    pub async fn execute(&self, req: reqwest::Request) -> Result<HttpResponse, HttpError> {
        let timeout = self.limits.timeout;
        match tokio::time::timeout(timeout, self.execute_inner(req)).await {
            Ok(r) => r,
            Err(_) => Err(HttpError::Timeout(timeout)),
        }
    }

    async fn execute_inner(&self, req: reqwest::Request) -> Result<HttpResponse, HttpError> {
        let timeout = self.limits.timeout;
        let max = self.limits.max_body;
        let mut resp = self
            .inner
            .execute(req)
            .await
            .map_err(|e| HttpError::from_reqwest(e, timeout))?;
        if resp.content_length().is_some_and(|len| len > max as u64) {
            return Err(HttpError::TooLarge(max));
        }
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let date = resp
            .headers()
            .get(reqwest::header::DATE)
            .and_then(|v| v.to_str().ok())
            .and_then(|d| {
                time::OffsetDateTime::parse(d, &time::format_description::well_known::Rfc2822).ok()
            })
            .map(time::OffsetDateTime::unix_timestamp);
        let location = resp
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let mut body = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| HttpError::from_reqwest(e, timeout))?
        {
            if body.len() + chunk.len() > max {
                return Err(HttpError::TooLarge(max));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(HttpResponse {
            status,
            content_type,
            body,
            date,
            location,
        })
    }
}

/// Lets openidconnect / oauth2 flows run through our limits.
impl<'c> openidconnect::AsyncHttpClient<'c> for HttpClient {
    type Error = HttpError;
    type Future =
        Pin<Box<dyn Future<Output = Result<openidconnect::HttpResponse, HttpError>> + Send + 'c>>;

    fn call(&'c self, request: openidconnect::HttpRequest) -> Self::Future {
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            let url = reqwest::Url::parse(&parts.uri.to_string())
                .map_err(|e| HttpError::Other(e.to_string()))?;
            let mut req = reqwest::Request::new(parts.method, url);
            *req.headers_mut() = parts.headers;
            *req.body_mut() = Some(body.into());
            *req.timeout_mut() = Some(self.limits.timeout);
            let resp = self.execute(req).await?;
            let mut builder = openidconnect::http::Response::builder().status(resp.status);
            if let Some(ct) = resp.content_type {
                builder = builder.header(openidconnect::http::header::CONTENT_TYPE, ct);
            }
            builder
                .body(resp.body)
                .map_err(|e| HttpError::Other(e.to_string()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::routing::get;

    async fn serve(app: Router) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn caps_bodies_and_times_out() {
        let app = Router::new()
            .route("/small", get(|| async { "ok" }))
            .route("/big", get(|| async { vec![b'x'; 2 * 1024 * 1024] }))
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    "late"
                }),
            )
            .route(
                "/redirect",
                get(|| async { axum::response::Redirect::temporary("/small") }),
            );
        let base = serve(app).await;
        let http = HttpClient::new(HttpLimits {
            timeout: Duration::from_millis(500),
            max_body: 1024,
        })
        .unwrap();
        let ok = http.get(&format!("{base}/small"), None).await.unwrap();
        assert_eq!(ok.body, b"ok");
        assert!(matches!(
            http.get(&format!("{base}/big"), None).await,
            Err(HttpError::TooLarge(1024))
        ));
        let start = std::time::Instant::now();
        assert!(matches!(
            http.get(&format!("{base}/slow"), None).await,
            Err(HttpError::Timeout(_))
        ));
        assert!(start.elapsed() < Duration::from_secs(2));
        let redirect = http.get(&format!("{base}/redirect"), None).await.unwrap();
        assert_eq!(redirect.status, 307, "redirects are not followed");
        let refused = http.get("http://127.0.0.1:1/", None).await.unwrap_err();
        let mapped = refused.into_provider_error("Demo");
        assert_eq!(
            mapped.error,
            LoginError::UpstreamUnavailable {
                provider: "Demo".into()
            }
        );
    }

    #[tokio::test]
    async fn streamed_body_without_length_is_capped() {
        use axum::body::Body;
        let app = Router::new().route(
            "/stream",
            get(|| async {
                let chunks = (0..1000).map(|_| Ok::<_, std::io::Error>(vec![b'y'; 64 * 1024]));
                Body::from_stream(futures::stream::iter(chunks))
            }),
        );
        let base = serve(app).await;
        let http = HttpClient::with_defaults().unwrap();
        assert!(matches!(
            http.get(&format!("{base}/stream"), None).await,
            Err(HttpError::TooLarge(_))
        ));
    }
}
