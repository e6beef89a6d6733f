//! Conflicts are reported, not guessed (SQLite and PostgreSQL): the people caught in one
//! are neither created, updated nor deactivated; everyone else is imported.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[macro_use]
mod common;

use common::*;
use homeroom_core::{AccountId, Role};
use homeroom_directory::*;
use homeroom_roster::{Conflict, ImportOptions, UserRef};

on_both_backends!(
    two_roster_users_with_one_email,
    email_of_an_account_the_roster_does_not_manage,
    changed_sourced_id_for_a_known_email,
    emails_may_move_between_roster_users,
);

async fn two_roster_users_with_one_email(dir: Directory) {
    setup(&dir).await;
    let mut p = Pkg::v11();
    p.bulk(
        "users",
        &USERS_1P1.replace("alan@example.org", "ADA@example.org "),
    );
    let r = import_ok(&dir, &p).await;
    assert_eq!(
        r.conflicts,
        vec![Conflict::DuplicateEmail {
            email: "ada@example.org".into(),
            users: vec![
                UserRef {
                    sourced_id: "u1".into(),
                    line: Some(2)
                },
                UserRef {
                    sourced_id: "u3".into(),
                    line: Some(4)
                },
            ],
        }]
    );
    let s = r.summary();
    assert_eq!((s.added, s.conflicts), (2, 1));
    assert_eq!(r.counts.users.in_conflict, 2);
    assert!(dir.roster_user(&tenant_id(), "u1").await.unwrap().is_none());
    assert!(dir.roster_user(&tenant_id(), "u3").await.unwrap().is_none());
    assert_eq!(dir.count_accounts(Some(&tenant_id())).await.unwrap(), 2);
    let logged = dir
        .last_successful_import(&tenant_id())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(logged.conflicts, 1);
    assert_eq!(logged.report["conflicts"][0]["kind"], "duplicate_email");
    assert!(r.render_text().contains(
        "email ada@example.org is shared by roster users u1 (users.csv:2), u3 (users.csv:4)"
    ));
}

async fn email_of_an_account_the_roster_does_not_manage(dir: Directory) {
    setup(&dir).await;
    // Someone signed in through SSO before the first roster import.
    let existing = Account {
        id: AccountId::new("acc_sso"),
        tenant: tenant_id(),
        status: AccountStatus::Active,
        email: Some("grace@example.org".into()),
        email_verified: true,
        name: Some("G. Hopper".into()),
        given_name: None,
        family_name: None,
        username: None,
        roles: vec![],
        created_at: 1,
        last_sign_in_at: Some(5),
        sign_in_count: 3,
    };
    dir.create_account(&existing, None).await.unwrap();
    let r = import_ok(&dir, &Pkg::v11()).await;
    assert_eq!(
        r.conflicts,
        vec![Conflict::EmailInUse {
            email: "grace@example.org".into(),
            user: UserRef {
                sourced_id: "u2".into(),
                line: Some(3)
            },
            account: "acc_sso".into(),
        }]
    );
    assert_eq!(r.summary().added, 3);
    assert!(dir.roster_user(&tenant_id(), "u2").await.unwrap().is_none());
    assert_eq!(
        dir.get_account(&existing.id).await.unwrap().unwrap(),
        existing
    );
    // Enrollments of the person in conflict are kept with the roster.
    assert_eq!(
        dir.roster_enrollments_for_user(&tenant_id(), "u2")
            .await
            .unwrap()
            .len(),
        1
    );

    // With adopt_existing the roster takes the account over (and keeps its history).
    let (_tmp, path) = Pkg::v11().write_dir();
    let r = import_with(
        &dir,
        &path,
        &ImportOptions {
            adopt_existing: true,
            ..opts()
        },
    )
    .await;
    assert!(
        r.succeeded() && r.conflicts.is_empty(),
        "{}",
        r.render_text()
    );
    assert_eq!(r.counts.users.adopted, 1);
    assert_eq!(r.summary().added, 1);
    let adopted = account_of(&dir, "u2").await;
    assert_eq!(adopted.id, existing.id);
    assert_eq!(adopted.roles, vec![Role::Teacher]);
    assert_eq!(adopted.sign_in_count, 3);
    assert_eq!(adopted.name.as_deref(), Some("Grace Hopper"));
    assert_eq!(dir.count_accounts(Some(&tenant_id())).await.unwrap(), 4);
}

async fn changed_sourced_id_for_a_known_email(dir: Directory) {
    setup(&dir).await;
    import_ok(&dir, &Pkg::v11()).await;
    let ada = account_of(&dir, "u1").await;
    // The SIS re-keyed Ada: u1 is gone, u1-new has her email.
    let mut p = Pkg::v11();
    p.bulk("users", &USERS_1P1.replace("u1,,,", "u1-new,,,"));
    p.bulk("enrollments", &ENROLLMENTS.replace(",u1,", ",u1-new,"));
    let before = dump(&dir).await;
    let r = import_ok(&dir, &p).await;
    assert_eq!(
        r.conflicts,
        vec![Conflict::SourcedIdChanged {
            email: "ada@example.org".into(),
            old_sourced_id: "u1".into(),
            user: UserRef {
                sourced_id: "u1-new".into(),
                line: Some(2)
            },
            account: ada.id.to_string(),
        }]
    );
    let s = r.summary();
    assert_eq!(
        (s.added, s.updated, s.deactivated, s.conflicts),
        (0, 0, 0, 1)
    );
    // Ada is not deactivated, and no second account appears.
    assert_eq!(
        dir.get_account(&ada.id).await.unwrap().unwrap().status,
        AccountStatus::Active
    );
    assert_eq!(
        dir.roster_user(&tenant_id(), "u1")
            .await
            .unwrap()
            .unwrap()
            .status,
        RosterUserStatus::Active
    );
    assert!(
        dir.roster_user(&tenant_id(), "u1-new")
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(dir.count_accounts(Some(&tenant_id())).await.unwrap(), 4);
    // Only the enrollment moved.
    let after = dump(&dir).await;
    let changed: Vec<_> = after.iter().filter(|l| !before.contains(l)).collect();
    assert!(
        changed.iter().all(|l| l.starts_with("roster_enrollments:")),
        "{changed:?}"
    );

    // A recycled address of a person removed long ago is the same conflict.
    let mut p = Pkg::v11();
    p.bulk(
        "users",
        &USERS_1P1.replace(
            "u3,,,true,s2,student,alan,,Alan,Turing,,1002,alan@example.org,,,,08,\n",
            "",
        ),
    );
    p.bulk(
        "enrollments",
        &ENROLLMENTS.replace("e3,,,c2,s2,u3,student,,,\n", ""),
    );
    assert_eq!(import_ok(&dir, &p).await.summary().deactivated, 1);
    let mut p = Pkg::v11();
    p.bulk("users", &USERS_1P1.replace("u3,,,", "u9,,,"));
    p.bulk("enrollments", &ENROLLMENTS.replace(",u3,", ",u9,"));
    let r = import_ok(&dir, &p).await;
    assert!(
        matches!(&r.conflicts[..], [Conflict::SourcedIdChanged { old_sourced_id, .. }] if old_sourced_id == "u3"),
        "{:?}",
        r.conflicts
    );
}

async fn emails_may_move_between_roster_users(dir: Directory) {
    setup(&dir).await;
    import_ok(&dir, &Pkg::v11()).await;
    // u1 and u3 swap addresses in one package: no conflict, both updated.
    let mut p = Pkg::v11();
    p.bulk(
        "users",
        &USERS_1P1
            .replace("Ada@Example.org", "TMP")
            .replace("alan@example.org", "ada@example.org")
            .replace("TMP", "alan@example.org"),
    );
    let r = import_ok(&dir, &p).await;
    assert!(r.conflicts.is_empty(), "{}", r.render_text());
    assert_eq!(r.summary().updated, 2);
    assert_eq!(
        account_of(&dir, "u1").await.email.as_deref(),
        Some("alan@example.org")
    );
    assert_eq!(
        account_of(&dir, "u3").await.email.as_deref(),
        Some("ada@example.org")
    );
}
