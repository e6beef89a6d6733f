//! OneRoster test packages: a 1.1 bulk package written to a temporary folder and imported
//! into tenant t1 through the real importer (orgs d1, s1, s2 always; the users, classes and
//! enrollments the test gives).

use super::Harness;
use homeroom_core::TenantId;

pub const USERS_HEADER: &str = "sourcedId,status,dateLastModified,enabledUser,orgSourcedIds,role,username,userIds,givenName,familyName,middleName,identifier,email,sms,phone,agentSourcedIds,grades,password";

/// Imports `users` (rows under [`USERS_HEADER`]) and, when given, the `classes.csv` and
/// `enrollments.csv` bodies (with their headers) into t1; the import must succeed.
pub async fn import(h: &Harness, users: &[&str], classes: Option<&str>, enrollments: Option<&str>) {
    let tmp = tempfile::tempdir().unwrap();
    let mut manifest =
        String::from("propertyName,value\nmanifest.version,1.0\noneroster.version,1.1\n");
    for name in [
        "academicSessions",
        "categories",
        "classResources",
        "courses",
        "courseResources",
        "demographics",
        "lineItems",
        "resources",
        "results",
    ] {
        manifest.push_str(&format!("file.{name},absent\n"));
    }
    manifest.push_str("file.orgs,bulk\nfile.users,bulk\n");
    for (name, body) in [("classes", classes), ("enrollments", enrollments)] {
        match body {
            Some(body) => {
                manifest.push_str(&format!("file.{name},bulk\n"));
                std::fs::write(tmp.path().join(format!("{name}.csv")), body).unwrap();
            }
            None => manifest.push_str(&format!("file.{name},absent\n")),
        }
    }
    manifest.push_str("source.systemName,Test SIS\n");
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
        "{report:?}"
    );
}

/// The classroom fixture: learners u1 (maya), u2 (leo), u3 (sam, a formula name) in class
/// c1 (7A Science, teacher Grace), u4 (ana) in c2 (7B Maths, teacher Omar), school s1.
pub async fn class_fixture(h: &Harness) {
    let users = [
        "u1,,,true,s1,student,maya,,Maya,Chen,,1001,maya.chen@demo.homeroom.test,,,,07,",
        "u2,,,true,s1,student,leo,,Leo,Okafor,,1002,leo.okafor@demo.homeroom.test,,,,07,",
        // A name a spreadsheet would run as a formula.
        "u3,,,true,s1,student,sam,,=HYPERLINK(\"\"http://x\"\"),Patel,,1004,,,,,07,",
        "u4,,,true,s1,student,ana,,Ana,Ruiz,,1003,ana.ruiz@demo.homeroom.test,,,,07,",
        "t1,,,true,s1,teacher,grace,,Grace,Hopper,,2001,grace.hopper@demo.homeroom.test,,,,,",
        "t2,,,true,s1,teacher,omar,,Omar,Haddad,,2002,omar.haddad@demo.homeroom.test,,,,,",
    ];
    import(
        h,
        &users,
        Some(
            "sourcedId,status,dateLastModified,title,grades,courseSourcedId,classCode,classType,location,schoolSourcedId,termSourcedIds,subjects,subjectCodes,periods\n\
         c1,,,7A Science,07,,,homeroom,,s1,,,,\n\
         c2,,,7B Maths,07,,,homeroom,,s1,,,,\n",
        ),
        Some(
            "sourcedId,status,dateLastModified,classSourcedId,schoolSourcedId,userSourcedId,role,primary,beginDate,endDate\n\
         e1,,,c1,s1,u1,student,,,\n\
         e2,,,c1,s1,u2,student,,,\n\
         e3,,,c1,s1,u3,student,,,\n\
         e4,,,c2,s1,u4,student,,,\n\
         e5,,,c1,s1,t1,teacher,true,,\n\
         e6,,,c2,s1,t2,teacher,true,,\n",
        ),
    )
    .await;
}
