//! Cookies: reading them strictly (a name sent twice is ambiguous and ignored, SES-03)
//! and writing them with the right flags (HttpOnly, SameSite=Lax, Path=/, Secure and the
//! `__Host-` prefix when the public URL is https).

use http::HeaderMap;

/// Base name of the SSO session cookie.
pub const SESSION: &str = "hr_session";
/// Base name of the cookie that binds an upstream hop to the browser that started it.
pub const FLOW: &str = "hr_flow";
/// Base name of the CSRF double-submit cookie.
pub const CSRF: &str = "hr_csrf";
/// Base name of the cookie that remembers which console page an admin asked for before
/// signing in (a same-origin `/console` path, checked when set and when read).
pub const CONSOLE_RETURN: &str = "hr_console_return";

/// The cookie name actually used: `__Host-` prefixed when secure.
pub fn name(base: &str, secure: bool) -> String {
    if secure {
        format!("__Host-{base}")
    } else {
        base.to_owned()
    }
}

/// What the request said about one cookie name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CookieValue {
    Absent,
    One(String),
    /// Sent more than once (possibly in disguise): never trusted.
    Ambiguous,
}

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("k={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// Reads cookie `base` (under its secure and plain names). Any duplicate, including a
/// percent-encoded spelling of the name or both the plain and the prefixed name, makes the
/// value ambiguous.
pub fn read(headers: &HeaderMap, base: &str, secure: bool) -> CookieValue {
    let wanted = name(base, secure);
    let mut found: Vec<String> = Vec::new();
    let mut lookalike = false;
    for header in headers.get_all(http::header::COOKIE) {
        let Ok(s) = header.to_str() else { continue };
        for pair in s.split(';') {
            let pair = pair.trim();
            let Some((k, v)) = pair.split_once('=') else {
                continue;
            };
            let k = k.trim();
            let decoded = percent_decode(k);
            if k == wanted {
                found.push(v.trim().trim_matches('"').to_owned());
            } else if decoded == wanted || decoded == base || decoded == format!("__Host-{base}") {
                lookalike = true;
            }
        }
    }
    match (found.len(), lookalike) {
        (0, false) => CookieValue::Absent,
        (1, false) => found
            .pop()
            .map(CookieValue::One)
            .unwrap_or(CookieValue::Absent),
        _ => CookieValue::Ambiguous,
    }
}

/// A `Set-Cookie` value. `max_age` None = session cookie; Some(0) deletes.
pub fn set(base: &str, value: &str, secure: bool, max_age: Option<i64>) -> String {
    let mut c = format!(
        "{}={}; Path=/; HttpOnly; SameSite=Lax",
        name(base, secure),
        value
    );
    if secure {
        c.push_str("; Secure");
    }
    if let Some(age) = max_age {
        c.push_str(&format!("; Max-Age={}", age.max(0)));
    }
    c
}

/// Base name of the session-status cookie: a random token that only lets registered apps
/// read (and keep alive) the session's idle timer from their own origin.
pub const STATUS: &str = "hr_status";

/// The status cookie. Over https it is `SameSite=None` (it must reach `/session/status`
/// from an app's cross-site `fetch`); it grants nothing but the status endpoint. Over plain
/// http (development) browsers refuse `SameSite=None`, so it is `Lax` there.
pub fn set_status(value: &str, secure: bool) -> String {
    if secure {
        format!(
            "{}={value}; Path=/; HttpOnly; Secure; SameSite=None",
            name(STATUS, true)
        )
    } else {
        set(STATUS, value, false, None)
    }
}

/// A `Set-Cookie` value that deletes the cookie.
pub fn clear(base: &str, secure: bool) -> String {
    set(base, "", secure, Some(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(cookie: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(http::header::COOKIE, cookie.parse().unwrap());
        h
    }

    #[test]
    fn reads_one_value() {
        assert_eq!(
            read(&headers("a=1; hr_session=abc"), SESSION, false),
            CookieValue::One("abc".into())
        );
        assert_eq!(read(&headers("a=1"), SESSION, false), CookieValue::Absent);
    }

    #[test]
    fn duplicates_and_disguises_are_ambiguous() {
        assert_eq!(
            read(&headers("hr_session=a; hr_session=b"), SESSION, false),
            CookieValue::Ambiguous
        );
        assert_eq!(
            read(&headers("hr_session=a; hr_sessi%6Fn=b"), SESSION, false),
            CookieValue::Ambiguous
        );
        assert_eq!(
            read(&headers("__Host-hr_session=a; hr_session=b"), SESSION, true),
            CookieValue::Ambiguous
        );
    }

    #[test]
    fn the_status_cookie_is_cross_site_only_over_https() {
        assert_eq!(
            set_status("t", true),
            "__Host-hr_status=t; Path=/; HttpOnly; Secure; SameSite=None"
        );
        assert!(set_status("t", false).contains("SameSite=Lax"));
    }

    #[test]
    fn secure_cookies_are_host_prefixed() {
        let c = set(SESSION, "v", true, None);
        assert!(c.starts_with("__Host-hr_session=v; Path=/; HttpOnly; SameSite=Lax; Secure"));
        assert!(!c.contains("Domain"));
        assert!(!set(SESSION, "v", false, None).contains("Secure"));
    }
}
