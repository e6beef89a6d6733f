//! Classroom sign-in codes: class codes, sealed codes and their lockout counter, on SQLite
//! and PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[macro_use]
mod common;

use common::*;
use homeroom_core::{AccountId, TenantId};
use homeroom_directory::*;

on_both_backends!(
    code_lockout_claims_are_exact_under_concurrency,
    new_codes_replace_old_ones_and_clear_the_lock,
    class_codes_are_unique_and_stable,
);

async fn setup(dir: &Directory) -> (TenantId, AccountId) {
    dir.upsert_tenant(&tenant("d1", &["example.org"]))
        .await
        .unwrap();
    let a = account("acc_l", "d1", None, 1000);
    dir.create_account(&a, None).await.unwrap();
    (a.tenant, a.id)
}

async fn code_lockout_claims_are_exact_under_concurrency(dir: Directory) {
    let (t, id) = setup(&dir).await;
    let policy = LocalPolicy::default();
    assert_eq!(
        dir.claim_code_attempt(&id, 5000, None, &policy)
            .await
            .unwrap(),
        AttemptClaim::NoCredential
    );
    dir.set_sign_in_codes(&t, &[(id.clone(), "v1:sealed".into())], "account:t", 1000)
        .await
        .unwrap();
    let tasks: Vec<_> = (0..30)
        .map(|_| {
            let (dir, id) = (dir.clone(), id.clone());
            tokio::spawn(async move {
                dir.claim_code_attempt(&id, 5000, Some("10.0.0.9"), &policy)
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut claimed = Vec::new();
    let mut locked = 0;
    for task in tasks {
        match task.await.unwrap() {
            AttemptClaim::Claimed { count } => claimed.push(count),
            AttemptClaim::Locked { until } => {
                assert_eq!(until, 5000 + 3600);
                locked += 1;
            }
            AttemptClaim::NoCredential => panic!("has a code"),
        }
    }
    claimed.sort_unstable();
    assert_eq!(claimed, (1..=10).collect::<Vec<_>>());
    assert_eq!(locked, 20);
    // After the window the count starts again; a success clears it.
    assert_eq!(
        dir.claim_code_attempt(&id, 5000 + 3600, None, &policy)
            .await
            .unwrap(),
        AttemptClaim::Claimed { count: 1 }
    );
    dir.code_succeeded(&id).await.unwrap();
    let c = dir.sign_in_code(&id).await.unwrap().unwrap();
    assert_eq!((c.failed_attempts, c.last_failed_at), (0, None));
}

async fn new_codes_replace_old_ones_and_clear_the_lock(dir: Directory) {
    let (t, id) = setup(&dir).await;
    let policy = LocalPolicy {
        max_failed_attempts: 2,
        lockout_secs: 600,
    };
    dir.set_sign_in_codes(&t, &[(id.clone(), "v1:one".into())], "account:a", 1000)
        .await
        .unwrap();
    for _ in 0..2 {
        dir.claim_code_attempt(&id, 2000, None, &policy)
            .await
            .unwrap();
    }
    assert!(matches!(
        dir.claim_code_attempt(&id, 2000, None, &policy)
            .await
            .unwrap(),
        AttemptClaim::Locked { .. }
    ));
    dir.set_sign_in_codes(&t, &[(id.clone(), "v1:two".into())], "account:b", 2100)
        .await
        .unwrap();
    let c = dir.sign_in_code(&id).await.unwrap().unwrap();
    assert_eq!(
        (c.code_enc.as_str(), c.set_by.as_str(), c.set_at),
        ("v1:two", "account:b", 2100)
    );
    assert_eq!(c.failed_attempts, 0);
    assert_eq!(
        dir.claim_code_attempt(&id, 2200, None, &policy)
            .await
            .unwrap(),
        AttemptClaim::Claimed { count: 1 }
    );
}

async fn class_codes_are_unique_and_stable(dir: Directory) {
    let (t, _) = setup(&dir).await;
    assert_eq!(dir.class_code(&t, "c1").await.unwrap(), None);
    let first = dir.ensure_class_code(&t, "c1", "ABC234", 1).await.unwrap();
    assert_eq!(first, "ABC234");
    // A second candidate does not replace the code in force.
    assert_eq!(
        dir.ensure_class_code(&t, "c1", "XYZ789", 2).await.unwrap(),
        "ABC234"
    );
    // Another class cannot take the same code.
    assert!(matches!(
        dir.ensure_class_code(&t, "c2", "ABC234", 3).await,
        Err(DirectoryError::Conflict { .. })
    ));
    assert_eq!(
        dir.class_by_code(" abc234 ").await.unwrap(),
        Some((t.clone(), "c1".to_owned()))
    );
    assert_eq!(dir.class_by_code("NOPE").await.unwrap(), None);
}
