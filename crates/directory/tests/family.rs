//! Families: invitations used exactly once under concurrency (and never after a primary
//! change), the primary change revoking every membership and invitation, view-only
//! secondaries, policy acceptance by the primary only, parent access codes single use and
//! expiring, on SQLite and PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[macro_use]
mod common;

use common::*;
use homeroom_core::{AccountId, TenantId};
use homeroom_directory::*;

on_both_backends!(
    invitation_is_used_exactly_once_and_makes_a_view_only_secondary,
    primary_change_revokes_every_membership_and_invitation,
    only_the_primary_accepts_policies,
    parent_code_is_single_use_and_expires,
    merge_moves_learners_and_revokes_in_one_step,
);

async fn setup(dir: &Directory) -> (Family, AccountId) {
    dir.upsert_tenant(&tenant("d1", &["example.org"]))
        .await
        .unwrap();
    for (id, email) in [
        ("acc_p", "pat@example.org"),
        ("acc_s", "sam@example.org"),
        ("acc_q", "quinn@example.org"),
        ("acc_kid", "kid@example.org"),
    ] {
        dir.create_account(&account(id, "d1", Some(email), 1000), None)
            .await
            .unwrap();
    }
    let f = dir
        .create_family(
            &TenantId::new("d1"),
            "Chen family",
            &AccountId::new("acc_p"),
            "test",
            1000,
        )
        .await
        .unwrap();
    (f, AccountId::new("acc_p"))
}

fn invitation(f: &Family, by: &AccountId, hash: &str) -> FamilyInvitation {
    FamilyInvitation {
        token_hash: hash.into(),
        family: f.id.clone(),
        tenant: f.tenant.clone(),
        email: "Sam@Example.org".into(),
        invited_by: by.clone(),
        created_at: 1100,
        used_at: None,
        used_by: None,
        revoked_at: None,
    }
}

async fn invitation_is_used_exactly_once_and_makes_a_view_only_secondary(dir: Directory) {
    let (f, p) = setup(&dir).await;
    // Only the live primary can invite.
    let by_other = invitation(&f, &AccountId::new("acc_s"), "h0");
    assert!(matches!(
        dir.create_family_invitation(&by_other, None).await,
        Err(DirectoryError::Invalid(_))
    ));
    assert!(dir.family_invitation_by_hash("h0").await.unwrap().is_none());
    dir.create_family_invitation(&invitation(&f, &p, "h1"), None)
        .await
        .unwrap();
    let inv = dir.family_invitation_by_hash("h1").await.unwrap().unwrap();
    assert_eq!(inv.email, "sam@example.org");
    // Concurrent uses by two accounts: exactly one joins.
    let tasks: Vec<_> = ["acc_s", "acc_q"]
        .iter()
        .map(|a| {
            let dir = dir.clone();
            let a = AccountId::new(*a);
            tokio::spawn(async move { dir.use_family_invitation("h1", &a, None, 1200).await })
        })
        .collect();
    let mut joined = 0;
    for t in tasks {
        match t.await.unwrap().unwrap() {
            InviteUse::Joined { family } => {
                assert_eq!(family, f.id);
                joined += 1;
            }
            InviteUse::Spent => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(joined, 1);
    let gs = dir.family_guardians(&f.id, false).await.unwrap();
    assert_eq!(gs.len(), 2);
    assert_eq!(gs[0].role, GuardianRole::Primary);
    assert_eq!(gs[0].access, GuardianAccess::Full);
    assert_eq!(gs[1].role, GuardianRole::Secondary);
    assert_eq!(gs[1].access, GuardianAccess::View);
    // A new account created with an invitation that is already used leaves nothing behind.
    let fresh = account("acc_new", "d1", Some("new@example.org"), 1300);
    assert_eq!(
        dir.use_family_invitation("h1", &fresh.id, Some((&fresh, "$argon2id$x")), 1300)
            .await
            .unwrap(),
        InviteUse::Spent
    );
    assert!(dir.get_account(&fresh.id).await.unwrap().is_none());
    // Revoking a secondary is a conditional update: the second time nothing happens.
    let s = gs[1].account.clone();
    assert!(
        dir.revoke_secondary(&f.id, &s, "staff", 1400, &[])
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        dir.revoke_secondary(&f.id, &s, "staff", 1401, &[])
            .await
            .unwrap()
            .is_none()
    );
    // The primary can never be revoked as a secondary.
    assert!(
        dir.revoke_secondary(&f.id, &p, "staff", 1402, &[])
            .await
            .unwrap()
            .is_none()
    );
    assert!(dir.memberships_of(&s).await.unwrap().is_empty());
}

async fn primary_change_revokes_every_membership_and_invitation(dir: Directory) {
    let (f, p) = setup(&dir).await;
    dir.create_family_invitation(&invitation(&f, &p, "h1"), None)
        .await
        .unwrap();
    dir.use_family_invitation("h1", &AccountId::new("acc_s"), None, 1200)
        .await
        .unwrap();
    dir.create_family_invitation(&invitation(&f, &p, "h2"), None)
        .await
        .unwrap();
    let revoked = dir
        .change_family_primary(&f.id, &AccountId::new("acc_q"), "staff", 1500, |gs| {
            assert_eq!(gs.len(), 2);
            Vec::new()
        })
        .await
        .unwrap();
    let mut who: Vec<_> = revoked.iter().map(|g| g.account.to_string()).collect();
    who.sort();
    assert_eq!(who, ["acc_p", "acc_s"]);
    let live = dir.family_guardians(&f.id, false).await.unwrap();
    assert_eq!(live.len(), 1);
    assert_eq!(live[0].account.as_str(), "acc_q");
    assert_eq!(live[0].role, GuardianRole::Primary);
    assert_eq!(
        dir.get_family(&f.id)
            .await
            .unwrap()
            .unwrap()
            .primary
            .as_str(),
        "acc_q"
    );
    // The pending invitation is revoked: it can never be used.
    assert_eq!(
        dir.use_family_invitation("h2", &AccountId::new("acc_kid"), None, 1600)
            .await
            .unwrap(),
        InviteUse::Revoked
    );
    // The same primary again: refused, nothing changes.
    assert!(matches!(
        dir.change_family_primary(
            &f.id,
            &AccountId::new("acc_q"),
            "staff",
            1700,
            |_| Vec::new()
        )
        .await,
        Err(DirectoryError::Invalid(_))
    ));
    assert_eq!(dir.family_guardians(&f.id, true).await.unwrap().len(), 3);
}

async fn only_the_primary_accepts_policies(dir: Directory) {
    let (f, p) = setup(&dir).await;
    let list = vec![("terms".to_owned(), "2".to_owned())];
    assert!(
        !dir.accept_family_policies(&f.id, &AccountId::new("acc_s"), &list, 1100)
            .await
            .unwrap()
    );
    assert!(
        dir.accept_family_policies(&f.id, &p, &list, 1100)
            .await
            .unwrap()
    );
    assert_eq!(dir.accepted_family_policies(&f.id, &p).await.unwrap(), list);
    dir.attest_adult(&p, 1200, Some("192.0.2.1")).await.unwrap();
    dir.attest_adult(&p, 1300, None).await.unwrap();
    assert_eq!(dir.adult_attested_at(&p).await.unwrap(), Some(1200));
}

fn code(hash: &str, learner: &str, at: i64) -> ParentCode {
    ParentCode {
        code_hash: hash.into(),
        tenant: TenantId::new("d1"),
        account: AccountId::new(learner),
        code_enc: None,
        created_at: at,
        created_by: "teacher".into(),
        expires_at: at + 100,
        used_at: None,
        used_by: None,
        revoked_at: None,
    }
}

async fn parent_code_is_single_use_and_expires(dir: Directory) {
    let (_, _) = setup(&dir).await;
    dir.put_parent_code(&code("c1", "acc_kid", 1000))
        .await
        .unwrap();
    // A newer code replaces the older one.
    dir.put_parent_code(&code("c2", "acc_kid", 1010))
        .await
        .unwrap();
    let q = dir
        .get_account(&AccountId::new("acc_q"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        dir.redeem_parent_code("c1", &q, None, "Q family", 1020)
            .await
            .unwrap(),
        CodeUse::Spent
    );
    assert_eq!(
        dir.redeem_parent_code("nope", &q, None, "Q family", 1020)
            .await
            .unwrap(),
        CodeUse::Unknown
    );
    // Concurrent redemptions: one wins; a family is made for the winner only.
    let s = dir
        .get_account(&AccountId::new("acc_s"))
        .await
        .unwrap()
        .unwrap();
    let tasks: Vec<_> = [q.clone(), s.clone()]
        .into_iter()
        .map(|a| {
            let dir = dir.clone();
            tokio::spawn(async move { dir.redeem_parent_code("c2", &a, None, "Fam", 1030).await })
        })
        .collect();
    let mut linked = 0;
    for t in tasks {
        if let CodeUse::Linked {
            created, learner, ..
        } = t.await.unwrap().unwrap()
        {
            assert!(created);
            assert_eq!(learner.as_str(), "acc_kid");
            linked += 1;
        }
    }
    assert_eq!(linked, 1);
    let families = dir
        .families_in_tenant(&TenantId::new("d1"), 10)
        .await
        .unwrap();
    assert_eq!(families.len(), 2, "the setup family and the winner's");
    // Expiry.
    dir.put_parent_code(&code("c3", "acc_kid", 2000))
        .await
        .unwrap();
    assert_eq!(
        dir.redeem_parent_code("c3", &q, None, "Q", 2100)
            .await
            .unwrap(),
        CodeUse::Expired
    );
}

async fn merge_moves_learners_and_revokes_in_one_step(dir: Directory) {
    let (a, p) = setup(&dir).await;
    let q = AccountId::new("acc_q");
    let kid = AccountId::new("acc_kid");
    let b = dir
        .create_family(&TenantId::new("d1"), "Other family", &q, "test", 1000)
        .await
        .unwrap();
    dir.link_family_student(&b.id, &kid, "sourced_id", 1000)
        .await
        .unwrap();
    // Into itself or an unknown family: nothing changes.
    assert!(
        dir.merge_families(&b.id, &b.id, "it", 1200, |_| vec![])
            .await
            .is_err()
    );
    assert!(
        dir.merge_families(&b.id, "fam_nope", "it", 1200, |_| vec![])
            .await
            .is_err()
    );
    assert_eq!(dir.family_students(&b.id).await.unwrap().len(), 1);
    let revoked = dir
        .merge_families(&b.id, &a.id, "it", 1200, |_| vec![])
        .await
        .unwrap();
    assert_eq!(revoked.len(), 1);
    assert_eq!(revoked[0].account, q);
    let moved = dir.family_students(&a.id).await.unwrap();
    assert_eq!(moved.len(), 1);
    assert_eq!(moved[0].account, kid);
    assert!(dir.family_students(&b.id).await.unwrap().is_empty());
    assert_eq!(
        dir.get_family(&b.id)
            .await
            .unwrap()
            .unwrap()
            .merged_into
            .as_deref(),
        Some(a.id.as_str())
    );
    let live = dir.family_guardians(&a.id, false).await.unwrap();
    assert_eq!(live.len(), 1);
    assert_eq!(live[0].account, p);
    // Merged once only.
    assert!(
        dir.merge_families(&b.id, &a.id, "it", 1300, |_| vec![])
            .await
            .is_err()
    );
}
