//! Shared harness for the directory integration tests: every suite is written once as
//! `async fn(Directory)` and run against a fresh SQLite file and a fresh PostgreSQL
//! schema (`HOMEROOM_TEST_POSTGRES_URL`, default `postgres://postgres@127.0.0.1:5432/test`).
//!
//! Isolation: each SQLite run gets its own temp directory; each PostgreSQL run creates a
//! schema `t_<ulid>`, connects with `search_path` set to it (URL `options`), and drops it
//! afterwards, also when the suite panics. When PostgreSQL is unreachable the test prints
//! `skipped: postgres not reachable` and passes, unless `CI=true`, where it fails.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use homeroom_core::{AccountId, ClientId, ProviderId, RefId, Role, TenantId};
use homeroom_directory::*;
use sqlx::Connection;
use std::future::Future;

/// Runs `$suite` (an `async fn(Directory)` in the parent module) on both backends, as
/// `mod $suite { fn sqlite(); fn postgres(); }`.
#[macro_export]
macro_rules! on_both_backends {
    ($($suite:ident),* $(,)?) => {
        $(
            mod $suite {
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn sqlite() {
                    $crate::common::run_sqlite(super::$suite).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn postgres() {
                    $crate::common::run_postgres(super::$suite).await;
                }
            }
        )*
    };
}

pub fn postgres_url() -> String {
    std::env::var("HOMEROOM_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Runs the suite on its own task so a failing assertion still lets us clean up, then
/// re-raises the failure.
async fn run_isolated<F, Fut>(suite: F, dir: Directory)
where
    F: FnOnce(Directory) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let outcome = tokio::spawn(suite(dir.clone())).await;
    dir.close().await;
    if let Err(e) = outcome {
        if e.is_panic() {
            std::panic::resume_unwind(e.into_panic());
        }
        panic!("suite task failed: {e}");
    }
}

/// A fresh SQLite file (in a nested, not yet existing directory) for one suite.
pub async fn run_sqlite<F, Fut>(suite: F)
where
    F: FnOnce(Directory) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let tmp = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/nested/homeroom.db", tmp.path().display());
    let dir = Directory::connect(&url).await.unwrap();
    run_isolated(suite, dir).await;
}

/// A fresh PostgreSQL schema: created, used through `search_path`, dropped.
pub struct PgSchema {
    admin: sqlx::PgConnection,
    pub name: String,
    pub url: String,
}

impl PgSchema {
    /// `None` (after printing why) when PostgreSQL is not reachable outside CI.
    pub async fn create() -> Option<PgSchema> {
        let base = postgres_url();
        let mut admin = match sqlx::PgConnection::connect(&base).await {
            Ok(c) => c,
            Err(e) => {
                if in_ci() {
                    panic!("postgres not reachable in CI: {e}");
                }
                eprintln!("skipped: postgres not reachable ({e})");
                return None;
            }
        };
        let name = format!("t_{}", ulid::Ulid::new().to_string().to_lowercase());
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {name}")))
            .execute(&mut admin)
            .await
            .unwrap();
        let sep = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{sep}options=-c%20search_path%3D{name}");
        Some(PgSchema { admin, name, url })
    }

    pub async fn drop_schema(mut self) {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP SCHEMA {} CASCADE",
            self.name
        )))
        .execute(&mut self.admin)
        .await
        .unwrap();
        let _ = self.admin.close().await;
    }
}

pub async fn run_postgres<F, Fut>(suite: F)
where
    F: FnOnce(Directory) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let Some(schema) = PgSchema::create().await else {
        return;
    };
    let dir = match Directory::connect(&schema.url).await {
        Ok(dir) => dir,
        Err(e) => {
            schema.drop_schema().await;
            panic!("connect to fresh schema failed: {e}");
        }
    };
    let outcome = tokio::spawn(suite(dir.clone())).await;
    dir.close().await;
    schema.drop_schema().await;
    if let Err(e) = outcome {
        if e.is_panic() {
            std::panic::resume_unwind(e.into_panic());
        }
        panic!("suite task failed: {e}");
    }
}

// ---------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------

pub fn tenant(id: &str, domains: &[&str]) -> Tenant {
    Tenant {
        id: TenantId::new(id),
        name: format!("District {id}"),
        domains: domains.iter().map(|d| (*d).to_owned()).collect(),
        session_idle_secs: 1800,
        session_absolute_secs: 43_200,
        session_warning_secs: 300,
    }
}

pub fn provider(id: &str, tenant: &str) -> ProviderRecord {
    ProviderRecord {
        id: ProviderId::new(id),
        tenant: TenantId::new(tenant),
        kind: "google".into(),
        display_name: format!("Sign in with {id}"),
        enabled: true,
        config: serde_json::json!({ "client_id": "abc", "hd": ["example.org"], "nested": { "n": 1 } }),
    }
}

pub fn app(client_id: &str, tenant: &str) -> AppRecord {
    AppRecord {
        client_id: ClientId::new(client_id),
        tenant: TenantId::new(tenant),
        name: format!("App {client_id}"),
        secret_hash: Some("ab".repeat(32)),
        token_endpoint_auth_method: "client_secret_basic".into(),
        redirect_uris: vec![
            "https://app.example/cb".into(),
            "http://127.0.0.1/cb".into(),
        ],
        post_logout_redirect_uris: vec![],
        allowed_scopes: vec!["openid".into(), "profile".into()],
        id_token_alg: "RS256".into(),
        enabled: true,
        initiate_login_uri: None,
        start_url: Some("https://app.example/".into()),
        allowed_origins: vec!["https://app.example".into()],
    }
}

pub fn account(id: &str, tenant: &str, email: Option<&str>, created_at: i64) -> Account {
    Account {
        id: AccountId::new(id),
        tenant: TenantId::new(tenant),
        status: AccountStatus::Active,
        email: email.map(str::to_owned),
        email_verified: true,
        name: Some("Ada Lovelace".into()),
        given_name: Some("Ada".into()),
        family_name: Some("Lovelace".into()),
        username: None,
        roles: vec![Role::Student, Role::Teacher],
        created_at,
        last_sign_in_at: None,
        sign_in_count: 0,
    }
}

pub fn link(account: &str, provider: &str, subject: &str, created_at: i64) -> ProviderLink {
    ProviderLink {
        account: AccountId::new(account),
        provider: ProviderId::new(provider),
        subject: subject.into(),
        email: Some("ada@example.org".into()),
        created_at,
    }
}

pub fn event(id: &str, ref_id: Option<&str>, at_ms: i64, kind: &str) -> AuditEvent {
    AuditEvent {
        id: id.into(),
        ref_id: ref_id.map(RefId::new),
        at_ms,
        tenant: Some(TenantId::new("d1")),
        kind: kind.into(),
        code: None,
        provider: None,
        client: None,
        account: None,
        detail: serde_json::json!({ "step": kind }),
    }
}
