//! The [`Directory`] handle: connecting (URL parsing, SQLite file creation, pragmas),
//! the connection pool and migrations. The queries themselves live in one module per
//! area (`tenants`, `providers`, `apps`, `accounts`, `keys`, `audit`), each adding
//! methods to [`Directory`].
//!
//! One code path for both databases: everything goes through `sqlx::Any` with runtime
//! queries and `$1` placeholders (understood by PostgreSQL natively and by SQLite as
//! numbered parameters), and one set of portable migrations (`migrations/`).

use crate::error::{DirectoryError, redact_url, scrub};
use sqlx::any::AnyPoolOptions;
use sqlx::pool::PoolConnectionMetadata;
use sqlx::{AnyConnection, AnyPool, Connection, Executor};
use std::future::Future;
use std::pin::Pin;
use std::sync::Once;
use std::time::Duration;

/// Which database a [`Directory`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A SQLite file or `sqlite::memory:`.
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

/// The durable-data handle the broker holds. Cheap to clone: clones share one pool.
#[derive(Debug, Clone)]
pub struct Directory {
    /// Shared connection pool; closed when the last clone is dropped (or by [`Directory::close`]).
    pub(crate) pool: AnyPool,
    backend: Backend,
}

/// SQLite waits this long for a lock held by another connection before failing.
const SQLITE_BUSY_TIMEOUT_MS: u64 = 5_000;
/// Connections of a SQLite file pool (one writer at a time in any case; WAL lets readers run).
const SQLITE_MAX_CONNECTIONS: u32 = 8;
/// Connections of a PostgreSQL pool.
const POSTGRES_MAX_CONNECTIONS: u32 = 10;
/// How long a query waits for a free connection (and `connect` for the first one).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!();

/// What `connect` derived from a URL.
#[derive(Debug, PartialEq)]
enum Target {
    /// `sqlite::memory:`: one private database, kept alive by a single pooled connection.
    SqliteMemory,
    /// A SQLite file; `url` is normalised to create the file when missing.
    SqliteFile {
        url: String,
        path: String,
    },
    Postgres {
        url: String,
    },
}

fn parse_target(url: &str) -> Result<Target, DirectoryError> {
    if url == "sqlite::memory:" || url == "sqlite://:memory:" || url == "sqlite::memory" {
        return Ok(Target::SqliteMemory);
    }
    if let Some(rest) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    {
        let (path, params) = match rest.split_once('?') {
            Some((path, params)) => (path, Some(params)),
            None => (rest, None),
        };
        if path.is_empty() {
            return Err(DirectoryError::BadUrl(url.to_owned()));
        }
        let has_mode = params.is_some_and(|p| p.split('&').any(|kv| kv.starts_with("mode=")));
        let url = match (params, has_mode) {
            (_, true) => url.to_owned(),
            (Some(p), false) => format!("sqlite://{path}?{p}&mode=rwc"),
            (None, false) => format!("sqlite://{path}?mode=rwc"),
        };
        return Ok(Target::SqliteFile {
            url,
            path: path.to_owned(),
        });
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(Target::Postgres {
            url: url.to_owned(),
        });
    }
    Err(DirectoryError::BadUrl(redact_url(url).0))
}

type HookFuture<'c> = Pin<Box<dyn Future<Output = Result<(), sqlx::Error>> + Send + 'c>>;

/// Per-connection settings for SQLite (PostgreSQL needs none): foreign keys are off by
/// default in SQLite and the busy timeout is per connection.
fn sqlite_after_connect<'c>(
    conn: &'c mut AnyConnection,
    _meta: PoolConnectionMetadata,
) -> HookFuture<'c> {
    Box::pin(async move {
        conn.execute("PRAGMA foreign_keys = ON").await?;
        conn.execute(sqlx::AssertSqlSafe(format!(
            "PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}"
        )))
        .await?;
        Ok(())
    })
}

impl Directory {
    /// Connects and runs the migrations. Accepts:
    /// - `sqlite://PATH` or `sqlite:PATH` (file and parent directory created when missing;
    ///   WAL journal, foreign keys on, 5 s busy timeout);
    /// - `sqlite::memory:` (one private in-memory database, served by a single connection
    ///   so every query sees the same data; gone when the `Directory` is dropped);
    /// - `postgres://user[:password]@host[:port]/db[?options=...]` (e.g.
    ///   `options=-c%20search_path%3Dmyschema` to use a schema other than `public`).
    pub async fn connect(url: &str) -> Result<Directory, DirectoryError> {
        static DRIVERS: Once = Once::new();
        DRIVERS.call_once(sqlx::any::install_default_drivers);

        let target = parse_target(url)?;
        let (redacted, password) = redact_url(url);
        let unavailable = |e: sqlx::Error| {
            DirectoryError::Unavailable(format!(
                "cannot open {redacted}: {}",
                scrub(e.to_string(), password.as_deref())
            ))
        };

        let (pool, backend) = match &target {
            Target::SqliteMemory => {
                let pool = AnyPoolOptions::new()
                    .max_connections(1)
                    .min_connections(1)
                    .idle_timeout(None)
                    .max_lifetime(None)
                    .acquire_timeout(ACQUIRE_TIMEOUT)
                    .after_connect(sqlite_after_connect)
                    .connect("sqlite::memory:")
                    .await
                    .map_err(unavailable)?;
                (pool, Backend::Sqlite)
            }
            Target::SqliteFile { url, path } => {
                if let Some(parent) = std::path::Path::new(path)
                    .parent()
                    .filter(|p| !p.as_os_str().is_empty())
                {
                    tokio::fs::create_dir_all(parent).await.map_err(|e| {
                        DirectoryError::Unavailable(format!(
                            "cannot create directory {}: {e}",
                            parent.display()
                        ))
                    })?;
                }
                let pool = AnyPoolOptions::new()
                    .max_connections(SQLITE_MAX_CONNECTIONS)
                    .acquire_timeout(ACQUIRE_TIMEOUT)
                    .after_connect(sqlite_after_connect)
                    .connect(url)
                    .await
                    .map_err(unavailable)?;
                // WAL is a property of the file: set once, every connection then uses it.
                sqlx::query("PRAGMA journal_mode = WAL")
                    .fetch_optional(&pool)
                    .await
                    .map_err(unavailable)?;
                (pool, Backend::Sqlite)
            }
            Target::Postgres { url } => {
                // One direct attempt first: a refused or misconfigured server fails at once
                // instead of after the pool's acquire timeout of retries.
                let probe = AnyConnection::connect(url).await.map_err(unavailable)?;
                let _ = probe.close().await;
                // No ping before every acquire (sqlx's default): it was a second round trip
                // for every query, ~14% of Homeroom's CPU in the surge benchmark and as much
                // again in PostgreSQL. A connection that died (server restart) fails its next
                // query, is dropped by the pool and replaced; connections are recycled after
                // `max_lifetime` and `idle_timeout` anyway.
                let pool = AnyPoolOptions::new()
                    .max_connections(POSTGRES_MAX_CONNECTIONS)
                    .acquire_timeout(ACQUIRE_TIMEOUT)
                    .test_before_acquire(false)
                    .max_lifetime(Some(std::time::Duration::from_secs(30 * 60)))
                    .idle_timeout(Some(std::time::Duration::from_secs(10 * 60)))
                    .connect(url)
                    .await
                    .map_err(unavailable)?;
                (pool, Backend::Postgres)
            }
        };

        MIGRATOR.run(&pool).await.map_err(|e| {
            DirectoryError::Database(format!(
                "migrations failed: {}",
                scrub(e.to_string(), password.as_deref())
            ))
        })?;
        Ok(Directory { pool, backend })
    }

    /// Which database this directory uses.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The underlying pool, for health checks and tools. Prefer the typed methods.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Checks that the database answers.
    pub async fn ping(&self) -> Result<(), DirectoryError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(crate::error::db)?;
        Ok(())
    }

    /// Closes the pool: waits for checked-out connections to return, then closes them.
    /// Every clone of this `Directory` stops working.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        assert_eq!(
            parse_target("sqlite::memory:").unwrap(),
            Target::SqliteMemory
        );
        assert_eq!(
            parse_target("sqlite://data/h.db").unwrap(),
            Target::SqliteFile {
                url: "sqlite://data/h.db?mode=rwc".into(),
                path: "data/h.db".into()
            }
        );
        assert_eq!(
            parse_target("sqlite:/tmp/h.db?cache=private").unwrap(),
            Target::SqliteFile {
                url: "sqlite:///tmp/h.db?cache=private&mode=rwc".into(),
                path: "/tmp/h.db".into()
            }
        );
        assert_eq!(
            parse_target("sqlite:///tmp/h.db?mode=ro").unwrap(),
            Target::SqliteFile {
                url: "sqlite:///tmp/h.db?mode=ro".into(),
                path: "/tmp/h.db".into()
            }
        );
        assert!(matches!(
            parse_target("postgres://u@h/db").unwrap(),
            Target::Postgres { .. }
        ));
        assert!(
            matches!(parse_target("mysql://u:pw@h/db"), Err(DirectoryError::BadUrl(u)) if !u.contains("pw"))
        );
        assert!(matches!(
            parse_target("sqlite://"),
            Err(DirectoryError::BadUrl(_))
        ));
    }

    #[tokio::test]
    async fn memory_database_is_shared_across_queries() {
        let dir = Directory::connect("sqlite::memory:").await.unwrap();
        sqlx::query("CREATE TABLE t (x BIGINT)")
            .execute(&dir.pool)
            .await
            .unwrap();
        for _ in 0..5 {
            sqlx::query("INSERT INTO t (x) VALUES ($1)")
                .bind(1_i64)
                .execute(&dir.pool)
                .await
                .unwrap();
        }
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM t")
            .fetch_one(&dir.pool)
            .await
            .unwrap();
        assert_eq!(n, 5);
    }
}
