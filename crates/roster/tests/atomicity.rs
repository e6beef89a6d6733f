//! A failed import leaves the previous state byte for byte (SQLite and PostgreSQL): a
//! package with an error deactivates nobody, and a write that fails half-way through the
//! transaction leaves nothing behind.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[macro_use]
mod common;

use common::*;
use homeroom_core::{AccountId, Role};
use homeroom_directory::*;

on_both_backends!(
    failed_package_after_a_good_one_changes_nothing,
    failure_inside_the_transaction_rolls_everything_back,
    unknown_tenant_is_an_error,
);

async fn failed_package_after_a_good_one_changes_nothing(dir: Directory) {
    setup(&dir).await;
    import_ok(&dir, &Pkg::v11()).await;
    let good = dir
        .last_successful_import(&tenant_id())
        .await
        .unwrap()
        .unwrap();
    let before = dump(&dir).await;

    // A bulk package that would drop u2 and u3, change u1 and add u5 — with one broken
    // reference at the very end.
    let mut p = Pkg::v11();
    p.bulk(
        "users",
        "sourcedId,status,dateLastModified,enabledUser,orgSourcedIds,role,username,givenName,familyName,email\n\
         u1,,,true,s1,student,ada,Ada,Changed,ada@example.org\n\
         u4,,,true,d1,administrator,edsger,Edsger,Dijkstra,edsger@example.org\n\
         u5,,,true,s2,student,kat,Kat,Johnson,kat@example.org\n",
    );
    p.bulk(
        "enrollments",
        "sourcedId,classSourcedId,schoolSourcedId,userSourcedId,role\ne1,c1,s1,u1,student\ne9,c1,s1,u2,student\n",
    );
    let r = import_failed(&dir, &p).await;
    assert_error(
        &r,
        "enrollments.csv",
        Some(3),
        Some("userSourcedId"),
        "broken_reference",
    );
    assert_eq!(r.summary().deactivated, 0);
    assert_eq!(dump(&dir).await, before);
    assert_eq!(
        dir.last_successful_import(&tenant_id())
            .await
            .unwrap()
            .unwrap()
            .id,
        good.id,
        "the last successful import is still the good one"
    );
    let log = dir.roster_imports(&tenant_id(), 10).await.unwrap();
    assert_eq!(log[0].status, "failed");
    assert_eq!(log[0].deactivated, 0);
}

async fn failure_inside_the_transaction_rolls_everything_back(dir: Directory) {
    setup(&dir).await;
    import_ok(&dir, &Pkg::v11()).await;
    let before = dump(&dir).await;
    let snap = dir.roster_snapshot(&tenant_id()).await.unwrap();
    let u1 = snap
        .users
        .iter()
        .find(|u| u.sourced_id == "u1")
        .unwrap()
        .clone();
    let acc = snap
        .accounts
        .iter()
        .find(|a| Some(&a.id) == u1.account.as_ref())
        .unwrap()
        .clone();
    let taken = dir
        .last_successful_import(&tenant_id())
        .await
        .unwrap()
        .unwrap();

    // Every kind of write, then an import row whose id is already used: the last
    // statement fails, so the transaction must leave nothing.
    let mut removed = u1.clone();
    removed.status = RosterUserStatus::Removed;
    let mut new_user = u1.clone();
    new_user.sourced_id = "u7".into();
    new_user.account = Some(AccountId::new("acc_new"));
    new_user.email = Some("new@example.org".into());
    let mut new_account = acc.clone();
    new_account.id = AccountId::new("acc_new");
    new_account.email = Some("new@example.org".into());
    let changes = RosterChanges {
        tenant: tenant_id(),
        accounts_create: vec![new_account],
        accounts_update: vec![AccountUpdate {
            id: acc.id.clone(),
            status: AccountStatus::Archived,
            email: acc.email.clone(),
            email_verified: true,
            name: None,
            given_name: None,
            family_name: None,
            username: None,
            roles: vec![Role::Guardian],
        }],
        users_upsert: vec![removed, new_user],
        orgs_upsert: vec![],
        orgs_delete: vec!["s2".into()],
        roles_upsert: vec![],
        roles_delete: vec![],
        classes_upsert: vec![],
        classes_delete: vec!["c1".into(), "c2".into()],
        enrollments_upsert: vec![],
        enrollments_delete: vec!["e1".into(), "e2".into(), "e3".into()],
        import: RosterImport {
            id: taken.id.clone(),
            ..taken.clone()
        },
    };
    let err = dir.apply_roster_changes(&changes).await.unwrap_err();
    assert!(matches!(err, DirectoryError::Conflict { .. }), "{err:?}");
    assert_eq!(dump(&dir).await, before);
    assert_eq!(dir.roster_imports(&tenant_id(), 10).await.unwrap().len(), 1);

    // Changes naming another tenant are refused up front.
    let mut other = changes.clone();
    other.import.id = "imp_other".into();
    other.users_upsert[0].tenant = homeroom_core::TenantId::new("d2");
    assert!(matches!(
        dir.apply_roster_changes(&other).await.unwrap_err(),
        DirectoryError::Invalid(_)
    ));
    assert_eq!(dump(&dir).await, before);
}

async fn unknown_tenant_is_an_error(dir: Directory) {
    let (_tmp, path) = Pkg::v11().write_dir();
    let mut progress = |_: homeroom_roster::Progress<'_>| {};
    let err = homeroom_roster::import_path(
        &dir,
        &homeroom_core::TenantId::new("nope"),
        &path,
        &opts(),
        &mut progress,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, homeroom_roster::RosterError::UnknownTenant(_)),
        "{err}"
    );
}
