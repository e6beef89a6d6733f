//! Local credentials, lockout counter, invitations, resets and the mail outbox, on SQLite
//! and PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[macro_use]
mod common;

use common::*;
use homeroom_core::{AccountId, TenantId};
use homeroom_directory::*;

on_both_backends!(
    lockout_claims_are_exact_under_concurrency,
    lockout_window_and_unlock,
    find_by_username_or_email,
    invitation_is_used_once,
    reset_is_single_use_expires_and_replaces_older_links,
    outbox_claim_send_fail_and_log,
    policy_per_tenant,
);

async fn setup(dir: &Directory) -> AccountId {
    dir.upsert_tenant(&tenant("d1", &["example.org"]))
        .await
        .unwrap();
    let mut a = account("acc_g", "d1", Some("Gina@Example.org"), 1000);
    a.username = Some("Guardian1".into());
    dir.create_account(&a, None).await.unwrap();
    dir.set_local_password(&a.id, &a.tenant, "$argon2id$fake", 1000)
        .await
        .unwrap();
    a.id
}

async fn lockout_claims_are_exact_under_concurrency(dir: Directory) {
    let id = setup(&dir).await;
    let policy = LocalPolicy::default();
    let tasks: Vec<_> = (0..30)
        .map(|_| {
            let (dir, id) = (dir.clone(), id.clone());
            tokio::spawn(async move {
                dir.claim_password_attempt(&id, 5000, Some("10.0.0.9"), &policy)
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut claimed = Vec::new();
    let mut locked = 0;
    for t in tasks {
        match t.await.unwrap() {
            AttemptClaim::Claimed { count } => claimed.push(count),
            AttemptClaim::Locked { until } => {
                assert_eq!(until, 5000 + 3600);
                locked += 1;
            }
            AttemptClaim::NoCredential => panic!("has credentials"),
        }
    }
    claimed.sort_unstable();
    assert_eq!(claimed, (1..=10).collect::<Vec<_>>());
    assert_eq!(locked, 20);
    let c = dir.local_credential(&id).await.unwrap().unwrap();
    assert_eq!(c.locked_until(&policy, 5000), Some(8600));
    assert_eq!(c.last_failed_ip.as_deref(), Some("10.0.0.9"));
}

async fn lockout_window_and_unlock(dir: Directory) {
    let id = setup(&dir).await;
    let p = LocalPolicy::default();
    for i in 0..10 {
        dir.claim_password_attempt(&id, 100 + i, None, &p)
            .await
            .unwrap();
    }
    assert!(matches!(
        dir.claim_password_attempt(&id, 200, None, &p)
            .await
            .unwrap(),
        AttemptClaim::Locked { until: 3709 }
    ));
    // An hour after the last failure the count starts again.
    assert_eq!(
        dir.claim_password_attempt(&id, 3709, None, &p)
            .await
            .unwrap(),
        AttemptClaim::Claimed { count: 1 }
    );
    dir.password_succeeded(&id).await.unwrap();
    assert_eq!(
        dir.local_credential(&id)
            .await
            .unwrap()
            .unwrap()
            .failed_attempts,
        0
    );
    for _ in 0..10 {
        dir.claim_password_attempt(&id, 9000, None, &p)
            .await
            .unwrap();
    }
    assert!(dir.unlock_local(&id).await.unwrap());
    assert_eq!(
        dir.claim_password_attempt(&id, 9001, None, &p)
            .await
            .unwrap(),
        AttemptClaim::Claimed { count: 1 }
    );
    assert!(!dir.unlock_local(&AccountId::new("nope")).await.unwrap());
    assert_eq!(
        dir.claim_password_attempt(&AccountId::new("nope"), 1, None, &p)
            .await
            .unwrap(),
        AttemptClaim::NoCredential
    );
}

async fn find_by_username_or_email(dir: Directory) {
    let id = setup(&dir).await;
    let t = TenantId::new("d1");
    for login in [
        "guardian1",
        "GUARDIAN1",
        " gina@example.org ",
        "GINA@EXAMPLE.ORG",
    ] {
        let found = dir.find_local_accounts(&t, login).await.unwrap();
        assert_eq!(found.len(), 1, "{login}");
        assert_eq!(found[0].0.id, id);
    }
    assert!(
        dir.find_local_accounts(&t, "gina")
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        dir.find_local_accounts(&TenantId::new("d2"), "guardian1")
            .await
            .unwrap()
            .is_empty()
    );
    // An SSO account with the same email but no credentials is not a local account.
    let sso = account("acc_sso", "d1", Some("sso@example.org"), 1001);
    dir.create_account(&sso, None).await.unwrap();
    assert!(
        dir.find_local_accounts(&t, "sso@example.org")
            .await
            .unwrap()
            .is_empty()
    );
}

fn mail(id: &str, account: &AccountId, link: Option<&str>) -> NewMail {
    NewMail {
        id: id.into(),
        tenant: Some(TenantId::new("d1")),
        account: Some(account.clone()),
        kind: "invitation".into(),
        to: "gina@example.org".into(),
        subject: "Hi".into(),
        body: format!("open {}", local::LINK_MARKER),
        link: link.map(str::to_owned),
        status: if link.is_some() {
            MailStatus::Pending
        } else {
            MailStatus::Unsent
        },
        created_at: 1000,
    }
}

async fn invitation_is_used_once(dir: Directory) {
    dir.upsert_tenant(&tenant("d1", &["example.org"]))
        .await
        .unwrap();
    let a = account("acc_i", "d1", Some("i@example.org"), 1000);
    dir.create_account(&a, None).await.unwrap();
    let inv = |hash: &str| Invitation {
        token_hash: hash.into(),
        account: a.id.clone(),
        tenant: a.tenant.clone(),
        created_at: 1000,
        created_by: "it".into(),
        used_at: None,
    };
    dir.create_invitation(&inv("h1"), Some(&mail("m1", &a.id, Some("https://x/l/T1"))))
        .await
        .unwrap();
    dir.create_invitation(&inv("h2"), None).await.unwrap();
    let c = dir.local_credential(&a.id).await.unwrap().unwrap();
    assert!(!c.password_set());
    assert_eq!(dir.pending_invitations(&a.tenant).await.unwrap().len(), 2);
    let tasks: Vec<_> = (0..10)
        .map(|i| {
            let dir = dir.clone();
            tokio::spawn(async move {
                let h = if i % 2 == 0 { "h1" } else { "h2" };
                (
                    i,
                    dir.accept_invitation(h, &format!("hash{i}"), 2000)
                        .await
                        .unwrap(),
                )
            })
        })
        .collect();
    let mut done = Vec::new();
    for t in tasks {
        let (i, u) = t.await.unwrap();
        if u == LinkUse::Done {
            done.push(i);
        } else {
            assert_eq!(u, LinkUse::Spent);
        }
    }
    assert_eq!(done.len(), 1);
    let c = dir.local_credential(&a.id).await.unwrap().unwrap();
    assert_eq!(c.password_hash, Some(format!("hash{}", done[0])));
    assert!(dir.pending_invitations(&a.tenant).await.unwrap().is_empty());
    assert_eq!(
        dir.accept_invitation("h1", "x", 3000).await.unwrap(),
        LinkUse::Spent
    );
    assert_eq!(
        dir.accept_invitation("zz", "x", 3000).await.unwrap(),
        LinkUse::Unknown
    );
    // The invitation's mail was written in the same transaction.
    assert_eq!(dir.mail_for_account(&a.id, 10).await.unwrap().len(), 1);
}

async fn reset_is_single_use_expires_and_replaces_older_links(dir: Directory) {
    let id = setup(&dir).await;
    let r = |hash: &str, at: i64| PasswordReset {
        token_hash: hash.into(),
        account: id.clone(),
        tenant: TenantId::new("d1"),
        created_at: at,
        expires_at: at + 6 * 3600,
        requested_by: "self".into(),
        used_at: None,
        revoked_at: None,
    };
    dir.create_reset(&r("r1", 1000), None).await.unwrap();
    dir.create_reset(
        &r("r2", 1100),
        Some(&mail("m2", &id, Some("https://x/r/T2"))),
    )
    .await
    .unwrap();
    // The newer link replaced the older one.
    assert!(
        dir.reset_by_hash("r1")
            .await
            .unwrap()
            .unwrap()
            .revoked_at
            .is_some()
    );
    assert_eq!(
        dir.use_reset("r1", "p", 1200).await.unwrap(),
        LinkUse::Spent
    );
    let pending = dir
        .pending_resets(&TenantId::new("d1"), 1200)
        .await
        .unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].expires_at, 1100 + 6 * 3600);
    // Expired at exactly its end.
    assert_eq!(
        dir.use_reset("r2", "p", 1100 + 6 * 3600).await.unwrap(),
        LinkUse::Spent
    );
    dir.create_reset(&r("r3", 50_000), None).await.unwrap();
    // A locked account is unlocked by a reset.
    for _ in 0..10 {
        dir.claim_password_attempt(&id, 50_001, None, &LocalPolicy::default())
            .await
            .unwrap();
    }
    assert_eq!(
        dir.use_reset("r3", "newhash", 50_002).await.unwrap(),
        LinkUse::Done
    );
    assert_eq!(
        dir.use_reset("r3", "again", 50_003).await.unwrap(),
        LinkUse::Spent
    );
    assert_eq!(
        dir.use_reset("nope", "x", 50_003).await.unwrap(),
        LinkUse::Unknown
    );
    let c = dir.local_credential(&id).await.unwrap().unwrap();
    assert_eq!(c.password_hash.as_deref(), Some("newhash"));
    assert_eq!(c.failed_attempts, 0);
    assert!(
        dir.pending_resets(&TenantId::new("d1"), 50_003)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn outbox_claim_send_fail_and_log(dir: Directory) {
    let id = setup(&dir).await;
    dir.enqueue_mail(&mail("a", &id, Some("https://x/1")))
        .await
        .unwrap();
    dir.enqueue_mail(&mail("b", &id, Some("https://x/2")))
        .await
        .unwrap();
    dir.enqueue_mail(&mail("c", &id, None)).await.unwrap();
    let due = dir.due_mail(1000, 10).await.unwrap();
    assert_eq!(
        due.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(),
        ["a", "b"]
    );
    // Two instances claim: one wins.
    let (x, y) = tokio::join!(
        dir.claim_mail("a", 1000, 120),
        dir.claim_mail("a", 1000, 120)
    );
    assert!(x.unwrap() ^ y.unwrap());
    dir.mail_sent("a", 1001).await.unwrap();
    assert!(dir.claim_mail("b", 1000, 120).await.unwrap());
    dir.mail_failed("b", "450 try later", Some(2000))
        .await
        .unwrap();
    assert!(dir.due_mail(1999, 10).await.unwrap().is_empty());
    assert_eq!(dir.due_mail(2000, 10).await.unwrap().len(), 1);
    assert!(dir.claim_mail("b", 2000, 120).await.unwrap());
    dir.mail_failed("b", "550 no such user", None)
        .await
        .unwrap();
    let a = dir.get_mail("a").await.unwrap().unwrap();
    assert_eq!(
        (a.status, a.attempts, a.sent_at, a.link),
        (MailStatus::Sent, 1, Some(1001), None)
    );
    let b = dir.get_mail("b").await.unwrap().unwrap();
    assert_eq!(b.status, MailStatus::Failed);
    assert_eq!(b.attempts, 2);
    assert_eq!(b.link, None, "given-up mail keeps no link");
    assert_eq!(b.last_error.as_deref(), Some("550 no such user"));
    let log = dir.mail_for_account(&id, 10).await.unwrap();
    assert_eq!(log.len(), 3);
    assert!(log.iter().all(|m| m.link.is_none()));
    assert_eq!(
        dir.get_mail("c").await.unwrap().unwrap().status,
        MailStatus::Unsent
    );
}

async fn policy_per_tenant(dir: Directory) {
    dir.upsert_tenant(&tenant("d1", &[])).await.unwrap();
    let t = TenantId::new("d1");
    assert_eq!(dir.local_policy(&t).await.unwrap(), None);
    let p = LocalPolicy {
        max_failed_attempts: 5,
        lockout_secs: 900,
    };
    dir.set_local_policy(&t, &p).await.unwrap();
    assert_eq!(dir.local_policy(&t).await.unwrap(), Some(p));
    assert!(matches!(
        dir.set_local_policy(
            &t,
            &LocalPolicy {
                max_failed_attempts: 0,
                lockout_secs: 1
            }
        )
        .await,
        Err(DirectoryError::Invalid(_))
    ));
}
