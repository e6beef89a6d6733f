//! The directory's error type and the one place where sqlx errors are classified.
//!
//! Error texts never carry the database URL's password: connection errors are scrubbed
//! with [`redact_url`] before they become a [`DirectoryError`].

/// A directory operation that could not be done. "Row absent" on a lookup is `Ok(None)`,
/// not an error; [`DirectoryError::NotFound`] is for updates of rows that do not exist.
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    /// The database cannot be reached (connect failed, pool timed out, I/O error).
    #[error("directory unavailable: {0}")]
    Unavailable(String),
    /// The database answered with an error not covered by the other variants.
    #[error("directory database error: {0}")]
    Database(String),
    /// The row to update (or a row it refers to) does not exist.
    #[error("not found: {what}")]
    NotFound {
        /// What was missing, e.g. `account acc_01..`.
        what: String,
    },
    /// A uniqueness rule would be broken (a provider subject linked twice, a domain
    /// claimed by two tenants). Nothing was written.
    #[error("conflict: {what}")]
    Conflict {
        /// What collided, e.g. `provider link google/1234`.
        what: String,
    },
    /// A stored value could not be decoded (bad JSON, unknown status).
    #[error("stored directory value could not be decoded: {0}")]
    Corrupt(String),
    /// The caller passed something the directory refuses to store.
    #[error("invalid directory input: {0}")]
    Invalid(String),
    /// The URL is neither `sqlite:` nor `postgres://`.
    #[error(
        "unsupported directory URL {0:?} (use sqlite://PATH, sqlite::memory: or postgres://...)"
    )]
    BadUrl(String),
}

impl DirectoryError {
    /// Classifies a sqlx error. `what` names the row(s) involved, for `Conflict` and
    /// `NotFound`.
    pub(crate) fn from_sqlx(e: sqlx::Error, what: impl FnOnce() -> String) -> Self {
        match e {
            sqlx::Error::Database(db) => {
                if db.is_unique_violation() {
                    DirectoryError::Conflict { what: what() }
                } else if db.is_foreign_key_violation() {
                    DirectoryError::NotFound {
                        what: format!("a row referenced by {}", what()),
                    }
                } else {
                    DirectoryError::Database(db.to_string())
                }
            }
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => DirectoryError::Unavailable(e.to_string()),
            sqlx::Error::ColumnDecode { .. }
            | sqlx::Error::Decode(_)
            | sqlx::Error::ColumnNotFound(_) => DirectoryError::Corrupt(e.to_string()),
            other => DirectoryError::Database(other.to_string()),
        }
    }
}

/// Shorthand for errors whose rows need no naming.
pub(crate) fn db(e: sqlx::Error) -> DirectoryError {
    DirectoryError::from_sqlx(e, || "row".to_owned())
}

/// The URL with any password replaced by `***`, and the password itself.
pub(crate) fn redact_url(url: &str) -> (String, Option<String>) {
    let Some(scheme_end) = url.find("://") else {
        return (url.to_owned(), None);
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else {
        return (url.to_owned(), None);
    };
    let Some((user, password)) = authority[..at].split_once(':') else {
        return (url.to_owned(), None);
    };
    if password.is_empty() {
        return (url.to_owned(), None);
    }
    let redacted = format!("{}://{user}:***@{}", &url[..scheme_end], &rest[at + 1..]);
    (redacted, Some(password.to_owned()))
}

/// Replaces every occurrence of `secret` in `msg` with `***`.
pub(crate) fn scrub(msg: String, secret: Option<&str>) -> String {
    match secret {
        Some(s) if !s.is_empty() && msg.contains(s) => msg.replace(s, "***"),
        _ => msg,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact_url("postgres://app:s3cret@db:5432/homeroom"),
            (
                "postgres://app:***@db:5432/homeroom".to_owned(),
                Some("s3cret".to_owned())
            )
        );
        assert_eq!(redact_url("postgres://postgres@127.0.0.1/test").1, None);
        assert_eq!(redact_url("sqlite://data/homeroom.db").1, None);
        assert_eq!(
            scrub("password s3cret rejected".into(), Some("s3cret")),
            "password *** rejected"
        );
    }
}
