#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Tenant policy: roster required (not rostered / dropped from the last bulk import get
//! their own pages, nothing is created) and app assignment by role and school.

mod common;
use common::*;
use homeroom_broker::policy::Assignment;
use homeroom_core::{ClientId, Role, TenantId};

const USERS_HEADER: &str = "sourcedId,status,dateLastModified,enabledUser,orgSourcedIds,role,username,userIds,givenName,familyName,middleName,identifier,email,sms,phone,agentSourcedIds,grades,password";

async fn import(h: &Harness, users: &[&str]) {
    let tmp = tempfile::tempdir().unwrap();
    let mut manifest =
        String::from("propertyName,value\nmanifest.version,1.0\noneroster.version,1.1\n");
    for name in [
        "academicSessions",
        "categories",
        "classes",
        "classResources",
        "courses",
        "courseResources",
        "demographics",
        "enrollments",
        "lineItems",
        "resources",
        "results",
    ] {
        manifest.push_str(&format!("file.{name},absent\n"));
    }
    manifest.push_str("file.orgs,bulk\nfile.users,bulk\nsource.systemName,Test SIS\n");
    std::fs::write(tmp.path().join("manifest.csv"), manifest).unwrap();
    std::fs::write(tmp.path().join("orgs.csv"), "sourcedId,status,dateLastModified,name,type,identifier,parentSourcedId\nd1,,,Demo District,district,,\ns1,,,North School,school,,d1\ns2,,,South School,school,,d1\n").unwrap();
    let mut csv = format!("{USERS_HEADER}\n");
    for u in users {
        csv.push_str(u);
        csv.push('\n');
    }
    std::fs::write(tmp.path().join("users.csv"), csv).unwrap();
    let mut progress = |_p: homeroom_roster::Progress<'_>| {};
    let report = homeroom_roster::import_path(
        &h.state.directory,
        &TenantId::new("t1"),
        tmp.path(),
        &Default::default(),
        &mut progress,
    )
    .await
    .unwrap();
    assert!(
        matches!(report.status, homeroom_roster::ImportStatus::Ok),
        "{}",
        report.render_text()
    );
}

const MAYA: &str = "u1,,,true,s1,student,maya,,Maya,Chen,,1001,maya.chen@demo.homeroom.test,,,,07,";
const GRACE: &str =
    "u2,,,true,s1,teacher,grace,,Grace,Hopper,,2001,grace.hopper@demo.homeroom.test,,,,,";

#[tokio::test]
async fn roster_required_admits_only_active_rostered_people() {
    let h = harness_with(Opts {
        tune: Some(|s| {
            s.roster_required.insert(TenantId::new("t1"));
        }),
        ..Opts::default()
    })
    .await;
    import(&h, &[MAYA, GRACE]).await;
    let accounts_before = h.state.directory.count_accounts(None).await.unwrap();
    // Leo authenticates upstream but is not on the roster: his own page, nothing created.
    let b = browser();
    let (_, c) = pkce();
    let r = follow(
        &b,
        &h,
        &authorize_url(&h, APP, Some(&c), &[("login_hint", STUDENT2)]),
    )
    .await;
    let (status, code, _) = page_code(r).await;
    assert_eq!((status, code.as_str()), (403, "account.not_rostered"));
    assert_eq!(
        h.state.directory.count_accounts(None).await.unwrap(),
        accounts_before,
        "no account for the unrostered"
    );
    // Maya is on it: signed in, linked to her roster account.
    let (code, v) = login(&browser(), &h, APP, STUDENT).await;
    assert_eq!(
        redeem(&h, APP, Some(APP_SECRET), &code, &v).await.status(),
        200
    );
    // The next bulk import drops Maya: she gets her own explanation.
    import(&h, &[GRACE]).await;
    let r = follow(
        &browser(),
        &h,
        &authorize_url(&h, APP, Some(&c), &[("login_hint", STUDENT)]),
    )
    .await;
    let html = r.text().await.unwrap();
    assert!(html.contains("account.not_in_last_import"), "{html}");
}

#[tokio::test]
async fn apps_are_only_for_the_roles_and_schools_they_are_assigned_to() {
    let h = harness_with(Opts {
        tune: Some(|s| {
            s.assignments.insert(
                ClientId::new(APP),
                Assignment {
                    roles: vec![Role::Teacher],
                    ..Default::default()
                },
            );
            s.assignments.insert(
                ClientId::new(OTHER),
                Assignment {
                    schools: vec!["s2".into()],
                    ..Default::default()
                },
            );
        }),
        ..Opts::default()
    })
    .await;
    import(&h, &[MAYA, GRACE]).await;
    // Maya is a student of s1: neither app is for her; the refusal names the app.
    let b = browser();
    let (_, c) = pkce();
    let r = follow(
        &b,
        &h,
        &authorize_url(&h, APP, Some(&c), &[("login_hint", STUDENT)]),
    )
    .await;
    assert!(r.headers().get("location").is_none());
    let (status, code, _) = page_code(r).await;
    assert_eq!((status, code.as_str()), (403, "account.app_not_assigned"));
    // Even with a live session, the other app is checked too (school s2 only).
    let r = b
        .get(authorize_url(&h, OTHER, Some(&c), &[("prompt", "none")]))
        .send()
        .await
        .unwrap();
    assert_eq!(page_code(r).await.1, "account.app_not_assigned");
    // An unrestricted app is fine for her.
    let (code, _) = login(&b, &h, PUBLIC, STUDENT).await;
    assert!(!code.is_empty());
    // Grace is a teacher: the teacher app lets her in.
    let (code, _) = login(&browser(), &h, APP, "grace.hopper@demo.homeroom.test").await;
    assert!(!code.is_empty());
}
