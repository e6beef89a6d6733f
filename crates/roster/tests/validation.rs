//! Every validation failure is reported with its file, line and column, and a package
//! with any error changes nothing (on SQLite and PostgreSQL). The failed attempt is
//! logged with status `failed`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[macro_use]
mod common;

use common::*;
use homeroom_directory::*;

on_both_backends!(
    each_failure_has_file_line_column_and_writes_nothing,
    reference_errors_against_stored_state,
    manifest_rules,
    delta_rows_need_status_and_date,
);

/// Imports `pkg` on an empty tenant, expects failure with this error, and checks that
/// nothing was written besides the failed log row.
async fn expect(
    dir: &Directory,
    pkg: &Pkg,
    file: &str,
    line: Option<u64>,
    column: Option<&str>,
    code: &str,
) {
    let before = dump(dir).await;
    let logged_before = dir.roster_imports(&tenant_id(), 1000).await.unwrap().len();
    let r = import_failed(dir, pkg).await;
    assert_error(&r, file, line, column, code);
    assert_eq!(r.summary(), Default::default());
    assert_eq!(dump(dir).await, before, "a failed import wrote something");
    let log = dir.roster_imports(&tenant_id(), 1000).await.unwrap();
    assert_eq!(log.len(), logged_before + 1);
    assert_eq!(log[0].status, "failed");
    assert!(log[0].errors >= 1);
    assert_eq!(log[0].report["status"], "failed");
}

async fn each_failure_has_file_line_column_and_writes_nothing(dir: Directory) {
    setup(&dir).await;

    // Missing required column.
    let mut p = Pkg::v11();
    p.bulk(
        "users",
        &USERS_1P1
            .replacen("givenName,", "", 1)
            .replace(",Ada,", ",")
            .replace(",Grace,", ",")
            .replace(",Alan,", ",")
            .replace(",Edsger,", ","),
    );
    expect(
        &dir,
        &p,
        "users.csv",
        Some(1),
        Some("givenName"),
        "missing_column",
    )
    .await;

    // Malformed row: a field too few.
    let mut p = Pkg::v11();
    p.bulk("orgs", "sourcedId,status,dateLastModified,name,type,identifier,parentSourcedId\nd1,,,District,district,,\ns1,,,North,school,NCES1\ns2,,,South,school,,d1\n");
    expect(&dir, &p, "orgs.csv", Some(3), None, "malformed_row").await;

    // Unterminated quote / bad UTF-8.
    let mut p = Pkg::v11();
    p.bulk(
        "classes",
        &format!("{CLASSES}c3,,,Bad \u{fffd}\u{fffd},,co,,scheduled,,s1,,,,\n")
            .replace('\u{fffd}', "\u{e9}"),
    );
    p.files
        .get_mut("classes.csv")
        .unwrap()
        .push_str("c4,,,\"unterminated,,,scheduled,,s1,,,,\n");
    let r = import_failed(&dir, &p).await;
    assert!(
        r.problems
            .errors
            .iter()
            .any(|e| e.file == "classes.csv" && e.code == "malformed_row"),
        "{}",
        r.render_text()
    );

    // Bad enums and booleans.
    let mut p = Pkg::v11();
    p.bulk(
        "orgs",
        &ORGS.replace("s2,,,South School,school", "s2,,,South School,campus"),
    );
    expect(&dir, &p, "orgs.csv", Some(4), Some("type"), "bad_value").await;
    let mut p = Pkg::v11();
    p.bulk(
        "users",
        &USERS_1P1.replace("u3,,,true,s2,student", "u3,,,yes,s2,student"),
    );
    expect(
        &dir,
        &p,
        "users.csv",
        Some(4),
        Some("enabledUser"),
        "bad_value",
    )
    .await;
    let mut p = Pkg::v11();
    p.bulk(
        "users",
        &USERS_1P1.replace("u2,,,true,s1,teacher", "u2,,,true,s1,wizard"),
    );
    expect(&dir, &p, "users.csv", Some(3), Some("role"), "bad_value").await;
    let mut p = Pkg::v11();
    p.bulk(
        "enrollments",
        &ENROLLMENTS.replace("e3,,,c2,s2,u3,student", "e3,,,c2,s2,u3,guardian"),
    );
    expect(
        &dir,
        &p,
        "enrollments.csv",
        Some(4),
        Some("role"),
        "bad_value",
    )
    .await;
    let mut p = Pkg::v11();
    p.bulk("classes", &CLASSES.replace("homeroom", "lecture"));
    expect(
        &dir,
        &p,
        "classes.csv",
        Some(3),
        Some("classType"),
        "bad_value",
    )
    .await;
    let mut p = Pkg::v11();
    p.bulk("users", &USERS_1P1.replace("u1,,,true", "u1,deleted,,true"));
    expect(&dir, &p, "users.csv", Some(2), Some("status"), "bad_value").await;
    let mut p = Pkg::v11();
    p.bulk(
        "enrollments",
        &ENROLLMENTS.replace("2026-09-01", "09/01/2026"),
    );
    expect(
        &dir,
        &p,
        "enrollments.csv",
        Some(2),
        Some("beginDate"),
        "bad_value",
    )
    .await;

    // Required values.
    let mut p = Pkg::v11();
    p.bulk("users", &USERS_1P1.replace(",grace,", ",,"));
    expect(
        &dir,
        &p,
        "users.csv",
        Some(3),
        Some("username"),
        "missing_value",
    )
    .await;
    let mut p = Pkg::v11();
    p.bulk("users", &USERS_1P1.replace("u4,,,true,d1,", "u4,,,true,,"));
    expect(
        &dir,
        &p,
        "users.csv",
        Some(5),
        Some("orgSourcedIds"),
        "missing_value",
    )
    .await;

    // Broken references.
    let mut p = Pkg::v11();
    p.bulk(
        "enrollments",
        &format!("{ENROLLMENTS}e4,,,c9,s1,u1,student,,,\n"),
    );
    expect(
        &dir,
        &p,
        "enrollments.csv",
        Some(5),
        Some("classSourcedId"),
        "broken_reference",
    )
    .await;
    let mut p = Pkg::v11();
    p.bulk(
        "enrollments",
        &format!("{ENROLLMENTS}e4,,,c1,s1,u9,student,,,\n"),
    );
    expect(
        &dir,
        &p,
        "enrollments.csv",
        Some(5),
        Some("userSourcedId"),
        "broken_reference",
    )
    .await;
    let mut p = Pkg::v11();
    p.bulk(
        "classes",
        &format!("{CLASSES}c3,,,Art,,co3,,scheduled,,s9,t1,,,\n"),
    );
    expect(
        &dir,
        &p,
        "classes.csv",
        Some(4),
        Some("schoolSourcedId"),
        "broken_reference",
    )
    .await;
    let mut p = Pkg::v11();
    p.bulk(
        "users",
        &USERS_1P1.replace("u2,,,true,s1,", "u2,,,true,\"s1,s7\","),
    );
    expect(
        &dir,
        &p,
        "users.csv",
        Some(3),
        Some("orgSourcedIds"),
        "broken_reference",
    )
    .await;
    let mut p = Pkg::v11();
    p.bulk("orgs", &format!("{ORGS}s3,,,East,school,,d7\n"));
    expect(
        &dir,
        &p,
        "orgs.csv",
        Some(5),
        Some("parentSourcedId"),
        "broken_reference",
    )
    .await;
    let mut p = Pkg::v12();
    p.bulk(
        "roles",
        &format!("{ROLES}r5,,,u8,secondary,teacher,,,s1,\n"),
    );
    expect(
        &dir,
        &p,
        "roles.csv",
        Some(6),
        Some("userSourcedId"),
        "broken_reference",
    )
    .await;

    // Duplicate sourcedId.
    let mut p = Pkg::v11();
    p.bulk(
        "users",
        &format!("{USERS_1P1}u2,,,true,s2,student,grace2,,Grace,Two,,,,,,,,\n"),
    );
    let r = import_failed(&dir, &p).await;
    assert_error(&r, "users.csv", Some(6), Some("sourcedId"), "duplicate_id");
    assert!(
        r.problems.errors[0].reason.contains("line 3"),
        "{}",
        r.render_text()
    );

    // Several problems at once are all reported.
    let mut p = Pkg::v11();
    p.bulk(
        "orgs",
        &ORGS
            .replace("campus", "x")
            .replace("s1,,,North School,school", "s1,,,,moon"),
    );
    p.bulk(
        "enrollments",
        &format!("{ENROLLMENTS}e4,,,c1,s1,u1,student,maybe,,\n"),
    );
    let r = import_failed(&dir, &p).await;
    assert_error(&r, "orgs.csv", Some(3), Some("name"), "missing_value");
    assert_error(&r, "orgs.csv", Some(3), Some("type"), "bad_value");
    assert_error(&r, "enrollments.csv", Some(5), Some("primary"), "bad_value");

    assert_eq!(dir.count_accounts(Some(&tenant_id())).await.unwrap(), 0);
    assert!(
        dir.last_successful_import(&tenant_id())
            .await
            .unwrap()
            .is_none()
    );
}

async fn reference_errors_against_stored_state(dir: Directory) {
    setup(&dir).await;
    import_ok(&dir, &Pkg::v11()).await;
    // A delta enrollment may point at stored people and classes...
    let mut p = Pkg::empty("1.1");
    p.delta("enrollments", "sourcedId,status,dateLastModified,classSourcedId,schoolSourcedId,userSourcedId,role\ne9,active,2027-01-01T00:00:00Z,c2,s2,u1,student\n");
    import_ok(&dir, &p).await;
    // ...but not at unknown ones.
    let mut p = Pkg::empty("1.1");
    p.delta("enrollments", "sourcedId,status,dateLastModified,classSourcedId,schoolSourcedId,userSourcedId,role\ne10,active,2027-01-01T00:00:00Z,c2,s2,nobody,student\n");
    expect(
        &dir,
        &p,
        "enrollments.csv",
        Some(2),
        Some("userSourcedId"),
        "broken_reference",
    )
    .await;
    // A bulk orgs file that drops a school stored classes still use.
    let mut p = Pkg::empty("1.1");
    p.bulk(
        "orgs",
        &ORGS.replace("s2,,,South School,school,NCES2,d1\n", ""),
    );
    expect(
        &dir,
        &p,
        "orgs.csv",
        None,
        Some("schoolSourcedId"),
        "broken_reference",
    )
    .await;
    // A delta removing a person while adding an enrollment for them.
    let mut p = Pkg::empty("1.1");
    p.delta("users", "sourcedId,status,dateLastModified,enabledUser,orgSourcedIds,role,username,givenName,familyName\nu3,tobedeleted,2027-02-01T00:00:00Z,true,s2,student,alan,Alan,Turing\n");
    p.delta("enrollments", "sourcedId,status,dateLastModified,classSourcedId,schoolSourcedId,userSourcedId,role\ne11,active,2027-02-01T00:00:00Z,c2,s2,u3,student\n");
    expect(
        &dir,
        &p,
        "enrollments.csv",
        Some(2),
        Some("userSourcedId"),
        "broken_reference",
    )
    .await;
    assert_eq!(account_of(&dir, "u3").await.status, AccountStatus::Active);
}

async fn manifest_rules(dir: Directory) {
    setup(&dir).await;
    // A file in the package that the manifest calls absent.
    let mut p = Pkg::v11();
    p.raw_file("demographics.csv", "sourcedId\n");
    expect(
        &dir,
        &p,
        "manifest.csv",
        Some(10),
        Some("value"),
        "manifest",
    )
    .await;
    // A file the manifest lists as bulk but that is missing.
    let mut p = Pkg::v11();
    p.files.remove("classes.csv");
    expect(&dir, &p, "manifest.csv", Some(6), Some("value"), "manifest").await;
    // Unsupported version.
    let mut p = Pkg::v11();
    p.version = "1.0";
    expect(&dir, &p, "manifest.csv", Some(3), Some("value"), "manifest").await;
    // Bad mode.
    let mut p = Pkg::v11();
    p.modes.insert("orgs".into(), "full".into());
    expect(
        &dir,
        &p,
        "manifest.csv",
        Some(13),
        Some("value"),
        "bad_value",
    )
    .await;
    // No manifest at all.
    let (_tmp, path) = Pkg::v11().write_dir();
    std::fs::remove_file(path.join("manifest.csv")).unwrap();
    let r = import_with(&dir, &path, &opts()).await;
    assert!(!r.succeeded());
    assert_eq!(r.problems.errors[0].code, "package");
    assert!(r.problems.errors[0].reason.contains("manifest.csv"));
    // A manifest without its header.
    let mut p = Pkg::v11();
    p.manifest_override = Some("oneroster.version,1.1\nfile.users,bulk\n".into());
    expect(
        &dir,
        &p,
        "manifest.csv",
        Some(1),
        Some("propertyName"),
        "missing_column",
    )
    .await;
}

async fn delta_rows_need_status_and_date(dir: Directory) {
    setup(&dir).await;
    import_ok(&dir, &Pkg::v11()).await;
    let head = "sourcedId,status,dateLastModified,name,type,identifier,parentSourcedId\n";
    let mut p = Pkg::empty("1.1");
    p.delta(
        "orgs",
        &format!("{head}s3,,2027-01-01T00:00:00Z,East,school,,d1\n"),
    );
    expect(
        &dir,
        &p,
        "orgs.csv",
        Some(2),
        Some("status"),
        "missing_value",
    )
    .await;
    let mut p = Pkg::empty("1.1");
    p.delta("orgs", &format!("{head}s3,active,,East,school,,d1\n"));
    expect(
        &dir,
        &p,
        "orgs.csv",
        Some(2),
        Some("dateLastModified"),
        "missing_value",
    )
    .await;
    let mut p = Pkg::empty("1.1");
    p.delta(
        "orgs",
        &format!("{head}s3,active,yesterday,East,school,,d1\n"),
    );
    expect(
        &dir,
        &p,
        "orgs.csv",
        Some(2),
        Some("dateLastModified"),
        "bad_value",
    )
    .await;
}
