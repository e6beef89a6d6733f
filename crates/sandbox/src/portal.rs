//! The machinery the three school-portal emulators ([`crate::clever`],
//! [`crate::classlink`], [`crate::gg4l`]) share; each adds only its wire formats and
//! quirks on top.
//!
//! [`PortalCore`] owns the registered clients, the people ([`PortalUser`]), the issued
//! authorization codes (single use, with a lifetime) and access tokens (in memory), the
//! active [`PortalTamper`] and per-path request counters. It renders the sign-in picker
//! (for app-initiated logins) and the **portal page**: one tile per (person, app) whose
//! link performs the portal's real launch (a 302 to the app's first registered redirect
//! URI with a fresh `code` and no `state`).

use crate::idp::{bad_request_page, html_escape, now, random, redirect};
use crate::keys::SandboxKeys;
use crate::users::PortalUser;
use crate::{SandboxClient, SandboxError, ServerGuard};
use axum::Router;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;

/// A misbehaviour a portal emulator injects into the following responses (test knob;
/// also settable with `POST /_sandbox/tamper` and JSON `{"tamper": "wrong_district"}`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "tamper", rename_all = "snake_case")]
pub enum PortalTamper {
    /// Behave.
    #[default]
    None,
    /// Every answer names another district / tenant / org than the user's.
    WrongDistrict,
    /// Codes are issued already past their lifetime.
    ExpiredCode,
    /// The authorize endpoint and tiles hand out the last code again (already redeemed:
    /// a refreshed callback page or back button).
    ReusedCode,
    /// Signed tokens (Clever OIDC / ClassLink ID token, GG4L `auth_token`) get a payload
    /// claim changed after signing.
    BadSignature,
    /// No email anywhere.
    MissingEmail,
    /// The user's role / type is `superhero`.
    UnknownRole,
}

/// The role sent under [`PortalTamper::UnknownRole`].
pub const UNKNOWN_ROLE: &str = "superhero";

/// An issued authorization code.
#[derive(Debug, Clone)]
pub(crate) struct Grant {
    pub client_id: String,
    pub redirect_uri: String,
    pub user: usize,
    pub nonce: Option<String>,
    pub created: i64,
}

#[derive(Default)]
struct PortalState {
    codes: HashMap<String, Grant>,
    /// access token -> user index.
    tokens: HashMap<String, usize>,
    tamper: PortalTamper,
    counters: HashMap<String, u64>,
    last_code: Option<String>,
}

/// What the shared core is made from.
pub(crate) struct CoreConfig {
    pub clients: Vec<SandboxClient>,
    pub users: Vec<PortalUser>,
    pub keys: SandboxKeys,
    pub code_ttl_secs: u64,
    /// The district / tenant named under [`PortalTamper::WrongDistrict`].
    pub other_org: String,
    /// Page title ("Clever", "ClassLink LaunchPad", ...).
    pub portal_name: String,
}

/// Shared state of one portal emulator.
pub(crate) struct PortalCore {
    pub cfg: CoreConfig,
    /// Short critical sections only; never held across an `.await`.
    state: Mutex<PortalState>,
}

impl PortalCore {
    pub fn new(cfg: CoreConfig) -> Self {
        Self {
            cfg,
            state: Mutex::new(PortalState::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, PortalState> {
        // A poisoned lock only means a test panicked mid-request; the data is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn count(&self, path: &str) {
        *self.state().counters.entry(path.to_owned()).or_default() += 1;
    }

    pub fn requests(&self, path: &str) -> u64 {
        self.state().counters.get(path).copied().unwrap_or(0)
    }

    pub fn set_tamper(&self, tamper: PortalTamper) {
        self.state().tamper = tamper;
    }

    pub fn tamper(&self) -> PortalTamper {
        self.state().tamper.clone()
    }

    pub fn client(&self, client_id: &str) -> Option<&SandboxClient> {
        self.cfg.clients.iter().find(|c| c.client_id == client_id)
    }

    /// A user by id, email or username (the sandbox's `login_hint` convenience).
    pub fn user_index(&self, hint: &str) -> Option<usize> {
        self.cfg.users.iter().position(|u| {
            u.id == hint
                || u.email
                    .as_deref()
                    .is_some_and(|e| e.eq_ignore_ascii_case(hint))
                || u.username.as_deref() == Some(hint)
        })
    }

    /// The user as the current tamper presents them (district, email, role).
    pub fn effective_user(&self, index: usize) -> Option<PortalUser> {
        let mut u = self.cfg.users.get(index)?.clone();
        match self.tamper() {
            PortalTamper::WrongDistrict => u.org = self.cfg.other_org.clone(),
            PortalTamper::MissingEmail => u.email = None,
            PortalTamper::UnknownRole => u.roles = vec![UNKNOWN_ROLE.to_owned()],
            _ => {}
        }
        Some(u)
    }

    /// Client and exact redirect URI of an authorization request; `Err` is the page.
    fn check_request(&self, p: &HashMap<String, String>) -> Result<(), Box<Response>> {
        let client_id = p.get("client_id").map(String::as_str).unwrap_or("");
        let Some(client) = self.client(client_id) else {
            return Err(Box::new(bad_request_page("Unknown client_id.")));
        };
        let redirect_uri = p.get("redirect_uri").map(String::as_str).unwrap_or("");
        if !client.redirect_uris.iter().any(|r| r == redirect_uri) {
            return Err(Box::new(bad_request_page(
                "redirect_uri is not registered for this client.",
            )));
        }
        if p.get("response_type").map(String::as_str) != Some("code") {
            return Err(Box::new(bad_request_page("response_type must be code.")));
        }
        Ok(())
    }

    /// Issues a code (honouring [`PortalTamper::ExpiredCode`] and
    /// [`PortalTamper::ReusedCode`]).
    pub fn issue_code(
        &self,
        client_id: &str,
        redirect_uri: &str,
        user: usize,
        nonce: Option<String>,
    ) -> String {
        let ttl = i64::try_from(self.cfg.code_ttl_secs).unwrap_or(60);
        let mut st = self.state();
        if st.tamper == PortalTamper::ReusedCode
            && let Some(old) = st.last_code.clone()
        {
            return old;
        }
        let created = if st.tamper == PortalTamper::ExpiredCode {
            now() - ttl - 5
        } else {
            now()
        };
        let code = random(24);
        st.codes.insert(
            code.clone(),
            Grant {
                client_id: client_id.to_owned(),
                redirect_uri: redirect_uri.to_owned(),
                user,
                nonce,
                created,
            },
        );
        st.last_code = Some(code.clone());
        code
    }

    /// Redeems a code: single use (removed whatever happens next), within its lifetime,
    /// for this client and (when given) this redirect URI. `Err` is the OAuth error code.
    pub fn redeem(
        &self,
        code: Option<&str>,
        client_id: &str,
        redirect_uri: Option<&str>,
    ) -> Result<Grant, &'static str> {
        let grant = code.and_then(|c| self.state().codes.remove(c));
        let Some(grant) = grant else {
            return Err("invalid_grant");
        };
        let ttl = i64::try_from(self.cfg.code_ttl_secs).unwrap_or(60);
        if now() - grant.created > ttl
            || grant.client_id != client_id
            || redirect_uri.is_some_and(|r| r != grant.redirect_uri)
        {
            return Err("invalid_grant");
        }
        Ok(grant)
    }

    pub fn issue_access_token(&self, user: usize) -> String {
        let token = random(32);
        self.state().tokens.insert(token.clone(), user);
        token
    }

    /// The user behind `Authorization: Bearer`.
    pub fn bearer_user(&self, headers: &HeaderMap) -> Option<usize> {
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })?;
        self.state().tokens.get(token.trim()).copied()
    }

    /// `GET` / `POST` authorize: validates, then answers at once for a known `login_hint`
    /// (sandbox convenience standing in for an existing portal session) or a chosen
    /// `user` (the picker's POST), else renders the picker. Back with `code` and the
    /// `state` if one was sent.
    pub fn authorize(&self, p: &HashMap<String, String>) -> Response {
        if let Err(page) = self.check_request(p) {
            return *page;
        }
        let chosen = p
            .get("user")
            .or_else(|| p.get("login_hint"))
            .and_then(|h| self.user_index(h));
        let Some(user) = chosen else {
            return self.picker_page(p);
        };
        let client_id = p.get("client_id").cloned().unwrap_or_default();
        let redirect_uri = p.get("redirect_uri").cloned().unwrap_or_default();
        let code = self.issue_code(&client_id, &redirect_uri, user, p.get("nonce").cloned());
        code_redirect(&redirect_uri, &code, p.get("state").map(String::as_str))
    }

    /// The name of the portal's session cookie (set by a tile click).
    fn session_cookie(&self) -> String {
        let name: String = self
            .cfg
            .portal_name
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .collect();
        format!("sbx_{}", name.to_ascii_lowercase())
    }

    /// Authorize inside the portal session: a student who clicked a tile is signed in at
    /// the portal, so an authorization request without a hint is answered at once for that
    /// student (as the real portals do; this is what makes a restarted launch silent).
    pub fn authorize_in_session(
        &self,
        p: &HashMap<String, String>,
        headers: &HeaderMap,
    ) -> Response {
        let wanted = self.session_cookie();
        let session_user = headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|s| s.split(';'))
            .find_map(|kv| {
                let (k, v) = kv.trim().split_once('=')?;
                (k == wanted).then(|| v.to_owned())
            });
        match session_user {
            Some(u) if !p.contains_key("user") && !p.contains_key("login_hint") => {
                let mut with = p.clone();
                with.insert("login_hint".into(), u);
                self.authorize(&with)
            }
            _ => self.authorize(p),
        }
    }

    /// A tile click: a fresh code for the client's **first** registered redirect URI and
    /// no `state` (the portals' real launch behaviour). Also signs the student in at the
    /// portal (session cookie).
    pub fn launch(&self, p: &HashMap<String, String>) -> Response {
        let mut resp = self.launch_inner(p);
        if resp.status().is_redirection()
            && let Some(u) = p.get("user").filter(|u| {
                u.bytes().all(|b| {
                    b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.' || b == b'@'
                })
            })
            && let Ok(v) = format!(
                "{}={u}; Path=/; HttpOnly; SameSite=Lax",
                self.session_cookie()
            )
            .parse()
        {
            resp.headers_mut().append(header::SET_COOKIE, v);
        }
        resp
    }

    fn launch_inner(&self, p: &HashMap<String, String>) -> Response {
        let Some(client) = p.get("client_id").and_then(|c| self.client(c)) else {
            return bad_request_page("Unknown app.");
        };
        let Some(user) = p.get("user").and_then(|u| self.user_index(u)) else {
            return bad_request_page("Unknown user.");
        };
        let Some(redirect_uri) = client.redirect_uris.first().cloned() else {
            return bad_request_page("The app has no redirect URI.");
        };
        let code = self.issue_code(&client.client_id, &redirect_uri, user, None);
        code_redirect(&redirect_uri, &code, None)
    }

    fn picker_page(&self, p: &HashMap<String, String>) -> Response {
        let hidden: String = [
            "client_id",
            "redirect_uri",
            "response_type",
            "scope",
            "state",
            "nonce",
            "code_challenge",
            "code_challenge_method",
            "district_id",
            "orgGuid",
        ]
        .iter()
        .filter_map(|k| p.get(*k).map(|v| (k, v)))
        .map(|(k, v)| {
            format!(
                r#"<input type="hidden" name="{k}" value="{}">"#,
                html_escape(v)
            )
        })
        .collect();
        let buttons: String = self
            .cfg
            .users
            .iter()
            .map(|u| {
                format!(
                    r#"<li><form method="post">{hidden}<button type="submit" name="user" value="{}"><span class="name">{}</span> <span class="role">{}</span></button></form></li>"#,
                    html_escape(&u.id),
                    html_escape(&u.display_name()),
                    html_escape(&u.roles.join(", ")),
                )
            })
            .collect();
        let title = format!("{} sign-in (sandbox)", self.cfg.portal_name);
        page(
            &title,
            &format!(
                "<p>This is a practice sign-in page. Choose who you are.</p><ul>{buttons}</ul>"
            ),
        )
    }

    /// The portal page: one tile per person and app; `launch_path` is relative to the
    /// page's directory (e.g. `portal/launch`), so the page works nested under a prefix.
    pub fn portal_page(&self, launch_path: &str) -> Response {
        let mut sections = String::new();
        for u in &self.cfg.users {
            let tiles: String = self
                .cfg
                .clients
                .iter()
                .map(|c| {
                    let q = url::form_urlencoded::Serializer::new(String::new())
                        .append_pair("user", &u.id)
                        .append_pair("client_id", &c.client_id)
                        .finish();
                    format!(
                        r#"<a class="tile" href="{launch_path}?{}">{}</a>"#,
                        html_escape(&q),
                        html_escape(&c.client_id)
                    )
                })
                .collect();
            sections.push_str(&format!(
                r#"<section><h2>{} <span class="role">{}</span></h2>{tiles}</section>"#,
                html_escape(&u.display_name()),
                html_escape(&u.roles.join(", "))
            ));
        }
        let title = format!("{} (sandbox portal)", self.cfg.portal_name);
        page(
            &title,
            &format!(
                "<p>Each tile opens the app the way this portal does: straight to the app with a sign-in code and no state.</p>{sections}"
            ),
        )
    }

    /// Signs `claims` with the emulator's key (RS256), or, under
    /// [`PortalTamper::BadSignature`], changes a claim after signing.
    pub fn sign(&self, mut claims: Map<String, Value>) -> String {
        let keys = &self.cfg.keys;
        let signed = keys.sign_rs256(Some("JWT"), &claims).unwrap_or_default();
        if self.tamper() != PortalTamper::BadSignature {
            return signed;
        }
        let mut parts = signed.split('.');
        let header = parts.next().unwrap_or_default().to_owned();
        let sig = parts.nth(1).unwrap_or_default().to_owned();
        claims.insert("tampered".into(), json!(true));
        let payload = URL_SAFE_NO_PAD.encode(Value::Object(claims).to_string());
        format!("{header}.{payload}.{sig}")
    }

    pub fn jwks(&self) -> Value {
        json!({"keys": [self.cfg.keys.public_jwk()]})
    }
}

/// `redirect_uri?code=…[&state=…]`.
pub(crate) fn code_redirect(redirect_uri: &str, code: &str, state: Option<&str>) -> Response {
    let mut url = redirect_uri.to_owned();
    url.push(if url.contains('?') { '&' } else { '?' });
    let mut q = url::form_urlencoded::Serializer::new(String::new());
    q.append_pair("code", code);
    if let Some(s) = state {
        q.append_pair("state", s);
    }
    url.push_str(&q.finish());
    redirect(&url)
}

fn page(title: &str, body: &str) -> Response {
    let title = html_escape(title);
    let html = format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:40rem;margin:2rem auto;padding:0 1rem}}
ul{{list-style:none;padding:0}}li{{margin:.75rem 0}}button{{width:100%;padding:1rem;font-size:1.2rem;text-align:left;border:2px solid #1a4d8f;border-radius:.5rem;background:#fff;cursor:pointer}}
.tile{{display:inline-block;margin:.25rem;padding:1rem 1.5rem;border:2px solid #1a4d8f;border-radius:.5rem;text-decoration:none;color:#1a4d8f;font-size:1.1rem}}
.tile:focus,.tile:hover,button:focus,button:hover{{background:#e8f0fb;outline:3px solid #1a4d8f}}.role{{color:#555;font-size:1rem}}</style></head>
<body><main><h1>{title}</h1>{body}</main></body></html>"#
    );
    (
        [
            (header::CACHE_CONTROL, "no-store"),
            (header::CONTENT_SECURITY_POLICY, "frame-ancestors 'none'"),
        ],
        Html(html),
    )
        .into_response()
}

/// Client credentials from `Authorization: Basic` (parts form-urlencoded, RFC 6749
/// §2.3.1); `None` without a well-formed Basic header.
pub(crate) fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let b64 = v.strip_prefix("Basic ")?;
    let decoded = String::from_utf8(STANDARD.decode(b64.trim()).ok()?).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    let dec = |s: &str| {
        url::form_urlencoded::parse(format!("x={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
    };
    Some((dec(id)?, dec(secret)?))
}

/// Whether the request carries any `Authorization: Basic` header.
pub(crate) fn has_basic(headers: &HeaderMap) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("Basic "))
}

/// A request body as key/value pairs: JSON object (`application/json`) or form.
pub(crate) fn body_params(headers: &HeaderMap, body: &[u8]) -> HashMap<String, String> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(m)) => m
                .into_iter()
                .filter_map(|(k, v)| match v {
                    Value::String(s) => Some((k, s)),
                    _ => None,
                })
                .collect(),
            _ => HashMap::new(),
        }
    } else {
        url::form_urlencoded::parse(body).into_owned().collect()
    }
}

/// Whether the client's secret matches (constant time).
pub(crate) fn secret_ok(client: &SandboxClient, secret: &str) -> bool {
    homeroom_core::crypto::ct_eq(secret.as_bytes(), client.client_secret.as_bytes())
}

/// A JSON OAuth error.
pub(crate) fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    (
        status,
        axum::Json(json!({"error": error, "error_description": description})),
    )
        .into_response()
}

/// Binds `127.0.0.1:0` and serves `router` until the guard is dropped.
pub(crate) async fn serve_on_loopback(
    listener: tokio::net::TcpListener,
    router: Router,
) -> Result<(SocketAddr, ServerGuard), SandboxError> {
    let addr = listener.local_addr()?;
    let handle = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::warn!(error = %e, "sandbox portal stopped");
        }
    });
    Ok((addr, ServerGuard { handle }))
}
