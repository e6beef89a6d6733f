//! Signing keys, on SQLite and PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[macro_use]
mod common;

use homeroom_directory::*;

on_both_backends!(keys_are_listed_oldest_first_and_change_status);

fn key(kid: &str, created_at: i64, status: &str) -> SigningKey {
    SigningKey {
        kid: kid.into(),
        alg: "RS256".into(),
        private_pem: "-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n".into(),
        public_jwk: serde_json::json!({ "kty": "RSA", "kid": kid, "n": "abc", "e": "AQAB" }),
        created_at,
        status: status.into(),
    }
}

async fn keys_are_listed_oldest_first_and_change_status(dir: Directory) {
    assert!(dir.list_signing_keys().await.unwrap().is_empty());
    let next = key("k3", 300, "next");
    let old = key("k1", 100, "previous");
    let current = key("k2", 200, "current");
    for k in [&next, &old, &current] {
        dir.insert_signing_key(k).await.unwrap();
    }
    assert_eq!(
        dir.list_signing_keys().await.unwrap(),
        vec![old.clone(), current.clone(), next.clone()]
    );

    let err = dir
        .insert_signing_key(&key("k2", 999, "current"))
        .await
        .unwrap_err();
    assert!(matches!(err, DirectoryError::Conflict { .. }), "{err:?}");

    dir.set_signing_key_status("k1", "retired").await.unwrap();
    dir.set_signing_key_status("k2", "previous").await.unwrap();
    dir.set_signing_key_status("k3", "current").await.unwrap();
    let statuses: Vec<_> = dir
        .list_signing_keys()
        .await
        .unwrap()
        .into_iter()
        .map(|k| (k.kid, k.status))
        .collect();
    assert_eq!(
        statuses,
        vec![
            ("k1".into(), "retired".into()),
            ("k2".into(), "previous".into()),
            ("k3".into(), "current".into())
        ]
    );
    let err = dir
        .set_signing_key_status("nope", "current")
        .await
        .unwrap_err();
    assert!(matches!(err, DirectoryError::NotFound { .. }), "{err:?}");
}
