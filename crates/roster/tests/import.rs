//! Round trips of OneRoster imports, on SQLite and PostgreSQL: 1.1 and 1.2, folder and
//! zip, bulk and delta, deactivation and reactivation, idempotent re-import, dry run.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[macro_use]
mod common;

use common::*;
use homeroom_core::Role;
use homeroom_directory::*;
use homeroom_roster::ImportOptions;

on_both_backends!(
    v11_round_trip_and_idempotent_reimport,
    v12_multi_role_users,
    zip_nested_folder_and_ignored_files,
    bulk_removes_absent_people_and_brings_them_back,
    delta_updates_adds_deletes_and_skips_stale_rows,
    disabled_users_and_statuses_set_by_it,
    dry_run_writes_nothing,
    real_world_deviations_are_tolerated,
    manifest_only_package_changes_nothing,
);

async fn v11_round_trip_and_idempotent_reimport(dir: Directory) {
    setup(&dir).await;
    let r = import_ok(&dir, &Pkg::v11()).await;
    let s = r.summary();
    assert_eq!(
        (s.added, s.updated, s.deactivated, s.conflicts),
        (4, 0, 0, 0)
    );
    assert_eq!(r.oneroster_version.as_deref(), Some("1.1"));
    assert_eq!(r.mode, "bulk");
    assert_eq!(r.counts.orgs.added, 3);
    assert_eq!(r.counts.classes.added, 2);
    assert_eq!(r.counts.enrollments.added, 3);
    assert_eq!(
        r.files
            .iter()
            .map(|f| (f.file.as_str(), f.rows))
            .collect::<Vec<_>>(),
        vec![
            ("orgs.csv", 3),
            ("users.csv", 4),
            ("classes.csv", 2),
            ("enrollments.csv", 3),
        ]
    );

    let ada = account_of(&dir, "u1").await;
    assert_eq!(ada.email.as_deref(), Some("ada@example.org"));
    assert!(
        ada.email_verified,
        "a roster-confirmed email counts as verified"
    );
    assert_eq!(ada.roles, vec![Role::Student]);
    assert_eq!(ada.status, AccountStatus::Active);
    assert_eq!(ada.name.as_deref(), Some("Ada Lovelace"));
    assert_eq!(ada.username.as_deref(), Some("ada"));
    assert_eq!(ada.created_at, 1_800_000_000);
    assert_eq!(
        account_of(&dir, "u4").await.roles,
        vec![Role::DistrictAdmin]
    );
    assert_eq!(account_of(&dir, "u2").await.roles, vec![Role::Teacher]);

    let u1 = dir.roster_user(&tenant_id(), "u1").await.unwrap().unwrap();
    assert_eq!(u1.grades, vec!["07"]);
    assert_eq!(u1.org_sourced_ids, vec!["s1"]);
    assert_eq!(u1.role_1p1.as_deref(), Some("student"));
    assert_eq!(u1.user_ids, vec!["{LDAP:ada}"]);
    assert_eq!(u1.status, RosterUserStatus::Active);
    assert_eq!(
        dir.roster_user_for_account(&ada.id)
            .await
            .unwrap()
            .unwrap()
            .sourced_id,
        "u1"
    );
    assert_eq!(
        dir.roster_users_by_email(&tenant_id(), " ADA@example.org")
            .await
            .unwrap()
            .len(),
        1
    );
    let enr = dir
        .roster_enrollments_for_user(&tenant_id(), "u2")
        .await
        .unwrap();
    assert_eq!(enr.len(), 1);
    assert_eq!(enr[0].primary, Some(true));
    assert_eq!(dir.count_accounts(Some(&tenant_id())).await.unwrap(), 4);

    let logged = dir
        .last_successful_import(&tenant_id())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(logged.id, r.import_id);
    assert_eq!(
        (
            logged.added,
            logged.updated,
            logged.deactivated,
            logged.conflicts
        ),
        (4, 0, 0, 0)
    );
    assert_eq!(logged.mode, "bulk");
    assert!(logged.users_bulk);
    assert_eq!(logged.report["counts"]["users"]["added"], 4);
    // The password column is never stored.
    assert!(!dump(&dir).await.join("\n").contains("secret"));
    assert!(!logged.report.to_string().contains("secret"));

    // Re-import: nothing changes, byte for byte.
    let before = dump(&dir).await;
    let again = import_ok(&dir, &Pkg::v11()).await;
    let s = again.summary();
    assert_eq!(
        (s.added, s.updated, s.deactivated, s.conflicts),
        (0, 0, 0, 0)
    );
    assert_eq!(again.counts.users.unchanged, 4);
    assert_eq!(again.counts.enrollments.unchanged, 3);
    assert_eq!(dump(&dir).await, before);
    assert_eq!(
        dir.last_successful_import(&tenant_id())
            .await
            .unwrap()
            .unwrap()
            .id,
        again.import_id
    );
    assert_eq!(dir.roster_imports(&tenant_id(), 10).await.unwrap().len(), 2);
}

async fn v12_multi_role_users(dir: Directory) {
    setup(&dir).await;
    let r = import_ok(&dir, &Pkg::v12()).await;
    assert_eq!(r.oneroster_version.as_deref(), Some("1.2"));
    assert_eq!(r.summary().added, 3);
    assert_eq!(r.counts.roles.added, 4);
    let grace = account_of(&dir, "u2").await;
    assert_eq!(grace.roles, vec![Role::Teacher, Role::SchoolAdmin]);
    let g = dir.roster_user(&tenant_id(), "u2").await.unwrap().unwrap();
    assert_eq!(g.org_sourced_ids, vec!["s1", "s2"]);
    assert_eq!(g.role_1p1, None);
    assert_eq!(g.user_master_identifier.as_deref(), Some("M2"));
    // Preferred names are what the account shows.
    let ada = account_of(&dir, "u1").await;
    assert_eq!(ada.name.as_deref(), Some("Addie Lovelace"));
    assert_eq!(ada.given_name.as_deref(), Some("Addie"));
    assert_eq!(
        dir.roster_user(&tenant_id(), "u1")
            .await
            .unwrap()
            .unwrap()
            .given_name,
        "Ada"
    );

    // A delta roles file takes a role away: the account follows.
    let mut p = Pkg::empty("1.2");
    p.delta(
        "roles",
        "sourcedId,status,dateLastModified,userSourcedId,roleType,role,beginDate,endDate,orgSourcedId,userProfile\n\
         r3,tobedeleted,2027-01-01T00:00:00Z,u2,secondary,siteAdministrator,,,s2,\n",
    );
    let r = import_ok(&dir, &p).await;
    assert_eq!(r.counts.roles.removed, 1);
    assert_eq!(r.summary().updated, 1);
    assert_eq!(account_of(&dir, "u2").await.roles, vec![Role::Teacher]);
    assert_eq!(
        dir.roster_user(&tenant_id(), "u2")
            .await
            .unwrap()
            .unwrap()
            .org_sourced_ids,
        vec!["s1"]
    );

    // A 1.2 extension role is refused unless the tenant maps it.
    let mut p = Pkg::empty("1.2");
    p.delta(
        "roles",
        "sourcedId,status,dateLastModified,userSourcedId,roleType,role,beginDate,endDate,orgSourcedId,userProfileSourcedId\n\
         r9,active,2027-01-02T00:00:00Z,u3,secondary,ext:coach,,,s2,\n",
    );
    let failed = import_failed(&dir, &p).await;
    assert_error(&failed, "roles.csv", Some(2), Some("role"), "unmapped_role");
    let (_tmp, path) = p.write_dir();
    let mut o = opts();
    o.ext_roles.insert("ext:coach".into(), Role::Staff);
    let r = import_with(&dir, &path, &o).await;
    assert!(r.succeeded(), "{}", r.render_text());
    assert_eq!(
        account_of(&dir, "u3").await.roles,
        vec![Role::Student, Role::Staff]
    );
}

async fn zip_nested_folder_and_ignored_files(dir: Directory) {
    setup(&dir).await;
    let mut p = Pkg::v11();
    p.bulk("courses", "sourcedId,status,dateLastModified,schoolYearSourcedId,title,courseCode,grades,orgSourcedId,subjects,subjectCodes\nco1,,,,Math,,,s1,,\n");
    p.bulk("academicSessions", "sourcedId,status,dateLastModified,title,type,startDate,endDate,parentSourcedId,schoolYear\nt1,,,Year,schoolYear,2026-09-01,2027-07-01,,2027\n");
    p.raw_file("README.txt", "hello");
    let (_tmp, zip_path) = p.write_zip(Some("export-2026"));
    let r = import_with(&dir, &zip_path, &opts()).await;
    assert!(r.succeeded(), "{}", r.render_text());
    assert_eq!(r.summary().added, 4);
    assert_eq!(
        r.ignored_files,
        vec![
            "export-2026/README.txt",
            "export-2026/academicSessions.csv",
            "export-2026/courses.csv"
        ]
    );
    // The same package as a root-level zip and as a folder: nothing more to do.
    let (_tmp2, flat) = p.write_zip(None);
    let r = import_with(&dir, &flat, &opts()).await;
    assert!(r.succeeded(), "{}", r.render_text());
    assert_eq!(r.summary().added + r.summary().updated, 0);
    let r = import_ok(&dir, &p).await;
    assert_eq!(r.summary().added + r.summary().updated, 0);
    assert_eq!(dir.count_accounts(Some(&tenant_id())).await.unwrap(), 4);

    // A zip from in-memory bytes (an upload).
    let bytes = std::fs::read(&flat).unwrap();
    let mut progress = |_: homeroom_roster::Progress<'_>| {};
    let r = homeroom_roster::import_zip_bytes(&dir, &tenant_id(), bytes, &opts(), &mut progress)
        .await
        .unwrap();
    assert!(r.succeeded());

    // Not a zip.
    let tmp = tempfile::tempdir().unwrap();
    let junk = tmp.path().join("junk.zip");
    std::fs::write(&junk, b"not a zip").unwrap();
    let r = import_with(&dir, &junk, &opts()).await;
    assert!(!r.succeeded());
    assert_eq!(r.problems.errors[0].code, "package");
}

async fn bulk_removes_absent_people_and_brings_them_back(dir: Directory) {
    setup(&dir).await;
    import_ok(&dir, &Pkg::v11()).await;
    let alan = account_of(&dir, "u3").await;

    // u3 is gone from the next bulk package (with its enrollment and class).
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
    let r = import_ok(&dir, &p).await;
    let s = r.summary();
    assert_eq!((s.added, s.updated, s.deactivated), (0, 0, 1));
    assert_eq!(r.counts.enrollments.removed, 1);
    let gone = dir.roster_user(&tenant_id(), "u3").await.unwrap().unwrap();
    assert_eq!(gone.status, RosterUserStatus::Removed);
    assert_eq!(
        gone.removed_by_import.as_deref(),
        Some(r.import_id.as_str())
    );
    assert_eq!(gone.removed_at, Some(1_800_000_000));
    let a = dir.get_account(&alan.id).await.unwrap().unwrap();
    assert_eq!(a.status, AccountStatus::Archived);
    assert_eq!(a.email, alan.email, "only the status changes");
    let bulk = dir
        .last_successful_bulk_import(&tenant_id())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(bulk.id, r.import_id);
    assert_eq!(bulk.deactivated, 1);

    // Same package again: u3 stays removed, nothing counted.
    let r = import_ok(&dir, &p).await;
    assert_eq!(r.summary().deactivated, 0);

    // u3 is back: same account, active again.
    let r = import_ok(&dir, &Pkg::v11()).await;
    assert_eq!(r.summary().updated, 1);
    assert_eq!(r.counts.users.reactivated, 1);
    let back = dir.roster_user(&tenant_id(), "u3").await.unwrap().unwrap();
    assert_eq!(back.status, RosterUserStatus::Active);
    assert_eq!(back.removed_at, None);
    assert_eq!(back.account.as_ref(), Some(&alan.id));
    assert_eq!(
        dir.get_account(&alan.id).await.unwrap().unwrap().status,
        AccountStatus::Active
    );
}

async fn delta_updates_adds_deletes_and_skips_stale_rows(dir: Directory) {
    setup(&dir).await;
    import_ok(&dir, &Pkg::v11()).await;
    let mut p = Pkg::empty("1.1");
    p.delta(
        "users",
        "sourcedId,status,dateLastModified,enabledUser,orgSourcedIds,role,username,userIds,givenName,familyName,middleName,identifier,email,sms,phone,agentSourcedIds,grades,password\n\
         u1,active,2027-01-10T00:00:00Z,true,s1,student,ada,,Ada,Byron,,1001,ada@example.org,,,,08,\n\
         u2,tobedeleted,2027-01-10T00:00:00Z,true,s1,teacher,grace,,Grace,Hopper,,2001,grace@example.org,,,,,\n\
         u5,active,2027-01-10 08:00:00,true,s2,student,kat,,Katherine,Johnson,,1005,kat@example.org,,,,07,\n",
    );
    p.delta(
        "enrollments",
        "sourcedId,status,dateLastModified,classSourcedId,schoolSourcedId,userSourcedId,role,primary,beginDate,endDate\n\
         e5,active,2027-01-10T00:00:00Z,c2,s2,u5,student,,,\n",
    );
    let r = import_ok(&dir, &p).await;
    assert_eq!(r.mode, "delta");
    let s = r.summary();
    assert_eq!((s.added, s.updated, s.deactivated), (1, 1, 1));
    // u2's stored enrollment goes with u2.
    assert_eq!(r.counts.enrollments.added, 1);
    assert_eq!(r.counts.enrollments.removed, 1);
    assert!(
        dir.roster_enrollments_for_user(&tenant_id(), "u2")
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        account_of(&dir, "u1").await.family_name.as_deref(),
        Some("Byron")
    );
    assert_eq!(account_of(&dir, "u2").await.status, AccountStatus::Archived);
    assert_eq!(account_of(&dir, "u5").await.roles, vec![Role::Student]);
    // Untouched people and files stay as they were.
    assert_eq!(account_of(&dir, "u3").await.status, AccountStatus::Active);
    assert_eq!(r.counts.orgs, Default::default());
    // A date without a zone is read as UTC, with a warning.
    assert!(
        r.problems
            .warnings
            .iter()
            .any(|w| w.code == "date_format" && w.line == Some(4))
    );
    // A delta is not a bulk import.
    assert_ne!(
        dir.last_successful_bulk_import(&tenant_id())
            .await
            .unwrap()
            .unwrap()
            .id,
        r.import_id
    );

    // An older row than the stored one is skipped, with a warning.
    let mut p = Pkg::empty("1.1");
    p.delta(
        "users",
        "sourcedId,status,dateLastModified,enabledUser,orgSourcedIds,role,username,givenName,familyName,email\n\
         u1,active,2027-01-01T00:00:00Z,true,s1,student,ada,Ada,Stale,ada@example.org\n",
    );
    let r = import_ok(&dir, &p).await;
    assert_eq!(r.counts.users.stale, 1);
    assert_eq!(r.summary().updated, 0);
    assert!(
        r.problems
            .warnings
            .iter()
            .any(|w| w.code == "stale_row" && w.line == Some(2))
    );
    assert_eq!(
        account_of(&dir, "u1").await.family_name.as_deref(),
        Some("Byron")
    );
}

async fn disabled_users_and_statuses_set_by_it(dir: Directory) {
    setup(&dir).await;
    let mut p = Pkg::v11();
    p.bulk("users", &USERS_1P1.replace("u2,,,true,", "u2,,,FALSE,"));
    import_ok(&dir, &p).await;
    assert_eq!(
        account_of(&dir, "u2").await.status,
        AccountStatus::Suspended
    );
    assert!(
        !dir.roster_user(&tenant_id(), "u2")
            .await
            .unwrap()
            .unwrap()
            .enabled
    );

    // IT suspends u1 by hand: the roster does not undo it.
    let ada = account_of(&dir, "u1").await;
    dir.set_account_status(&ada.id, AccountStatus::Suspended)
        .await
        .unwrap();
    // Re-enabled u2 comes back to active.
    let r = import_ok(&dir, &Pkg::v11()).await;
    assert_eq!(r.summary().updated, 1);
    assert_eq!(account_of(&dir, "u2").await.status, AccountStatus::Active);
    assert_eq!(
        account_of(&dir, "u1").await.status,
        AccountStatus::Suspended
    );
}

async fn dry_run_writes_nothing(dir: Directory) {
    setup(&dir).await;
    let before = dump(&dir).await;
    let (_tmp, path) = Pkg::v11().write_dir();
    let r = import_with(
        &dir,
        &path,
        &ImportOptions {
            dry_run: true,
            ..opts()
        },
    )
    .await;
    assert!(r.succeeded() && r.dry_run);
    assert_eq!(r.summary().added, 4);
    assert_eq!(dump(&dir).await, before);
    assert!(
        dir.last_successful_import(&tenant_id())
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        dir.roster_imports(&tenant_id(), 10)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn real_world_deviations_are_tolerated(dir: Directory) {
    setup(&dir).await;
    let mut p = Pkg::v11();
    // BOM, header case and aliases, reordered columns, TRUE/FALSE, a number grade, an
    // unknown column, metadata preserved, CRLF line ends, a tobedeleted row in bulk.
    p.bulk(
        "users",
        "\u{feff}SourcedID,EnabledUser,status,OrgSourcedIDs,ROLE,username,UserID,givenName,familyName,email,agents,grade,metadata.house,favouriteColour\r\n\
         u1,TRUE,active,\"s1, s2\",student,ada,\"{LDAP:ada}, {LTI:x}\",Ada,Lovelace,ada@example.org,u9,7,Gryffindor,blue\r\n\
         u2,True,,s1,Teacher,grace,,Grace,Hopper,grace@example.org,,,,\r\n\
         u3,true,tobedeleted,s2,student,alan,,Alan,Turing,alan@example.org,,,,\r\n\
         u4,true,,s1,student,kid,,Kid,NoMail,none,,KG,,\r\n",
    );
    p.bulk(
        "enrollments",
        "sourcedId,classSourcedId,schoolSourcedId,userSourcedId,role\ne1,c1,s1,u1,student\n",
    );
    let r = import_ok(&dir, &p).await;
    assert_eq!(r.summary().added, 3, "{}", r.render_text());
    let u1 = dir.roster_user(&tenant_id(), "u1").await.unwrap().unwrap();
    assert_eq!(u1.org_sourced_ids, vec!["s1", "s2"]);
    assert_eq!(u1.user_ids, vec!["{LDAP:ada}", "{LTI:x}"]);
    assert_eq!(u1.grades, vec!["07"]);
    assert_eq!(u1.agent_sourced_ids, vec!["u9"]);
    assert_eq!(
        u1.extra,
        serde_json::json!({ "metadata.house": "Gryffindor" })
    );
    assert_eq!(account_of(&dir, "u2").await.roles, vec![Role::Teacher]);
    assert!(dir.roster_user(&tenant_id(), "u3").await.unwrap().is_none());
    let kid = account_of(&dir, "u4").await;
    assert_eq!(kid.email, None);
    assert!(!kid.email_verified);
    let codes: Vec<&str> = r
        .problems
        .warnings
        .iter()
        .map(|w| w.code.as_str())
        .collect();
    assert!(codes.contains(&"unknown_column"), "{codes:?}");
    assert!(codes.contains(&"unknown_agent"), "{codes:?}");
    assert!(codes.contains(&"bad_email"), "{codes:?}");
}

async fn manifest_only_package_changes_nothing(dir: Directory) {
    setup(&dir).await;
    import_ok(&dir, &Pkg::v11()).await;
    let before = dump(&dir).await;
    let r = import_ok(&dir, &Pkg::empty("1.1")).await;
    assert_eq!(r.mode, "empty");
    assert_eq!(r.summary(), Default::default());
    assert_eq!(dump(&dir).await, before);
}
