//! Page templates (askama, auto-escaped) and the small static routes (stylesheet, home).

use crate::AppState;
use askama::Template;
use axum::Router;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use http::{HeaderValue, StatusCode, header};

#[derive(Template)]
#[template(path = "error.html")]
pub struct ErrorPage<'a> {
    pub title: &'a str,
    pub message: String,
    pub guidance: String,
    pub code: &'a str,
    pub ref_id: &'a str,
    pub time: String,
    pub app: &'a str,
    pub provider: &'a str,
    pub browser: &'a str,
    pub retry_href: &'a str,
    pub retry_label: &'a str,
}

/// One provider button.
pub struct ProviderButton {
    pub name: String,
    pub href: String,
}

#[derive(Template)]
#[template(path = "login.html")]
pub struct LoginPage<'a> {
    pub tenant_name: &'a str,
    pub app_name: &'a str,
    pub providers: Vec<ProviderButton>,
    pub req: &'a str,
    pub email: &'a str,
    pub notice: &'a str,
}

#[derive(Template)]
#[template(path = "logout.html")]
pub struct LogoutPage<'a> {
    pub app_name: &'a str,
    pub csrf: &'a str,
    pub post_logout_redirect_uri: &'a str,
    pub client_id: &'a str,
    pub state: &'a str,
}

#[derive(Template)]
#[template(path = "message.html")]
pub struct MessagePage<'a> {
    pub title: &'a str,
    pub message: &'a str,
    pub link_href: &'a str,
    pub link_label: &'a str,
}

/// Renders a template as an HTML response that is never cached.
pub fn html<T: Template>(status: StatusCode, t: &T) -> Response {
    match t.render() {
        Ok(body) => {
            let mut r = (status, Html(body)).into_response();
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
        Err(e) => {
            tracing::error!(error = %e, "template render failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
        }
    }
}

/// A simple message page.
pub fn message(
    status: StatusCode,
    title: &str,
    message: &str,
    link: Option<(&str, &str)>,
) -> Response {
    let (link_href, link_label) = link.unwrap_or(("", ""));
    html(
        status,
        &MessagePage {
            title,
            message,
            link_href,
            link_label,
        },
    )
}

async fn stylesheet() -> Response {
    let mut r = include_str!("../templates/homeroom.css").into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/css; charset=utf-8"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    r
}

async fn challenge_script() -> Response {
    let mut r = include_str!("../templates/challenge.js").into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/javascript; charset=utf-8"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    r
}

async fn home() -> Response {
    message(
        StatusCode::OK,
        "Homeroom",
        "This is your school's sign-in service. Open an app from your school's portal to sign in.",
        None,
    )
}

async fn health(axum::extract::State(state): axum::extract::State<AppState>) -> Response {
    match state.sessions.backend().ping().await {
        Ok(()) => (StatusCode::OK, "ok").into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "health: session store down");
            (StatusCode::SERVICE_UNAVAILABLE, "session store unavailable").into_response()
        }
    }
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(home))
        .route("/healthz", get(health))
        .route("/static/homeroom.css", get(stylesheet))
        .route("/static/challenge.js", get(challenge_script))
}
