//! Connecting and migrating: URL forms, file creation, idempotent migrations.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[macro_use]
mod common;

use common::*;
use homeroom_core::TenantId;
use homeroom_directory::*;

#[tokio::test]
async fn sqlite_file_is_created_with_parent_dirs_and_migrations_are_idempotent() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("a/b/homeroom.db");
    let url = format!("sqlite://{}", path.display());
    let first = Directory::connect(&url).await.unwrap();
    assert!(path.exists());
    assert_eq!(first.backend(), Backend::Sqlite);
    first
        .upsert_tenant(&tenant("d1", &["example.org"]))
        .await
        .unwrap();
    // A second pool on the same file, while the first is open, then a third after close.
    let second = Directory::connect(&url).await.unwrap();
    assert_eq!(second.list_tenants().await.unwrap().len(), 1);
    first.close().await;
    second.close().await;
    let third = Directory::connect(&url).await.unwrap();
    assert_eq!(
        third
            .get_tenant(&TenantId::new("d1"))
            .await
            .unwrap()
            .unwrap()
            .domains,
        vec!["example.org"]
    );
    let applied: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations")
        .fetch_one(third.pool())
        .await
        .unwrap();
    assert!(applied >= 1);
    // WAL journal and foreign keys on.
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(third.pool())
        .await
        .unwrap();
    assert_eq!(mode.to_lowercase(), "wal");
    let fk: i64 = sqlx::query_scalar("PRAGMA foreign_keys")
        .fetch_one(third.pool())
        .await
        .unwrap();
    assert_eq!(fk, 1);
    third.ping().await.unwrap();
}

#[tokio::test]
async fn sqlite_memory_is_one_shared_database() {
    let dir = Directory::connect("sqlite::memory:").await.unwrap();
    let tasks: Vec<_> = (0..10)
        .map(|i| {
            let dir = dir.clone();
            tokio::spawn(async move {
                dir.upsert_tenant(&tenant(&format!("d{i}"), &[]))
                    .await
                    .unwrap()
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(dir.list_tenants().await.unwrap().len(), 10);
    // Another connect is another, empty, database.
    let other = connect("sqlite::memory:").await.unwrap();
    assert!(other.list_tenants().await.unwrap().is_empty());
}

#[tokio::test]
async fn bad_urls_are_refused() {
    for url in ["mysql://root:hunter2@localhost/db", "bogus", "sqlite://"] {
        let err = Directory::connect(url).await.unwrap_err();
        assert!(matches!(err, DirectoryError::BadUrl(_)), "{url}: {err:?}");
        assert!(!err.to_string().contains("hunter2"));
    }
}

#[tokio::test]
async fn unreachable_postgres_is_unavailable_without_password() {
    let err = Directory::connect("postgres://app:hunter2@127.0.0.1:1/db")
        .await
        .unwrap_err();
    assert!(matches!(err, DirectoryError::Unavailable(_)), "{err:?}");
    assert!(!err.to_string().contains("hunter2"), "{err}");
}

#[tokio::test]
async fn postgres_migrations_are_idempotent() {
    let Some(schema) = PgSchema::create().await else {
        return;
    };
    let first = Directory::connect(&schema.url).await.unwrap();
    assert_eq!(first.backend(), Backend::Postgres);
    first
        .upsert_tenant(&tenant("d1", &["example.org"]))
        .await
        .unwrap();
    let second = Directory::connect(&schema.url).await.unwrap();
    assert_eq!(second.list_tenants().await.unwrap().len(), 1);
    // The tables live in the test schema, not in public.
    let n: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = 'tenants'",
    )
    .fetch_one(second.pool())
    .await
    .unwrap();
    assert_eq!(n, 1);
    let current: String = sqlx::query_scalar("SELECT current_schema()::text")
        .fetch_one(second.pool())
        .await
        .unwrap();
    assert_eq!(current, schema.name);
    first.close().await;
    second.close().await;
    schema.drop_schema().await;
}
