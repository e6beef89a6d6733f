//! Shared harness for the roster integration tests (the directory crate's pattern): every
//! suite is written once as
//! `async fn(Directory)` and run against a fresh SQLite file and a fresh PostgreSQL
//! schema (`HOMEROOM_TEST_POSTGRES_URL`, default `postgres://postgres@127.0.0.1:5432/test`).
//!
//! Isolation: each SQLite run gets its own temp directory; each PostgreSQL run creates a
//! schema `t_<ulid>`, connects with `search_path` set to it (URL `options`), and drops it
//! afterwards, also when the suite panics. When PostgreSQL is unreachable the test prints
//! `skipped: postgres not reachable` and passes, unless `CI=true`, where it fails.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use homeroom_core::TenantId;
use homeroom_directory::*;
use homeroom_roster::{ImportOptions, ImportReport, Progress};
use sqlx::Connection;
use std::collections::BTreeMap;
use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Runs `$suite` (an `async fn(Directory)` in the parent module) on both backends, as
/// `mod $suite { fn sqlite(); fn postgres(); }`.
#[macro_export]
macro_rules! on_both_backends {
    ($($suite:ident),* $(,)?) => {
        $(
            mod $suite {
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn sqlite() {
                    $crate::common::run_sqlite(super::$suite).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn postgres() {
                    $crate::common::run_postgres(super::$suite).await;
                }
            }
        )*
    };
}

pub fn postgres_url() -> String {
    std::env::var("HOMEROOM_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Runs the suite on its own task so a failing assertion still lets us clean up, then
/// re-raises the failure.
async fn run_isolated<F, Fut>(suite: F, dir: Directory)
where
    F: FnOnce(Directory) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let outcome = tokio::spawn(suite(dir.clone())).await;
    dir.close().await;
    if let Err(e) = outcome {
        if e.is_panic() {
            std::panic::resume_unwind(e.into_panic());
        }
        panic!("suite task failed: {e}");
    }
}

/// A fresh SQLite file (in a nested, not yet existing directory) for one suite.
pub async fn run_sqlite<F, Fut>(suite: F)
where
    F: FnOnce(Directory) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let tmp = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/nested/homeroom.db", tmp.path().display());
    let dir = Directory::connect(&url).await.unwrap();
    run_isolated(suite, dir).await;
}

/// A fresh PostgreSQL schema: created, used through `search_path`, dropped.
pub struct PgSchema {
    admin: sqlx::PgConnection,
    pub name: String,
    pub url: String,
}

impl PgSchema {
    /// `None` (after printing why) when PostgreSQL is not reachable outside CI.
    pub async fn create() -> Option<PgSchema> {
        let base = postgres_url();
        let mut admin = match sqlx::PgConnection::connect(&base).await {
            Ok(c) => c,
            Err(e) => {
                if in_ci() {
                    panic!("postgres not reachable in CI: {e}");
                }
                eprintln!("skipped: postgres not reachable ({e})");
                return None;
            }
        };
        let name = format!("t_{}", ulid::Ulid::new().to_string().to_lowercase());
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {name}")))
            .execute(&mut admin)
            .await
            .unwrap();
        let sep = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{sep}options=-c%20search_path%3D{name}");
        Some(PgSchema { admin, name, url })
    }

    pub async fn drop_schema(mut self) {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP SCHEMA {} CASCADE",
            self.name
        )))
        .execute(&mut self.admin)
        .await
        .unwrap();
        let _ = self.admin.close().await;
    }
}

pub async fn run_postgres<F, Fut>(suite: F)
where
    F: FnOnce(Directory) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let Some(schema) = PgSchema::create().await else {
        return;
    };
    let dir = match Directory::connect(&schema.url).await {
        Ok(dir) => dir,
        Err(e) => {
            schema.drop_schema().await;
            panic!("connect to fresh schema failed: {e}");
        }
    };
    let outcome = tokio::spawn(suite(dir.clone())).await;
    dir.close().await;
    schema.drop_schema().await;
    if let Err(e) = outcome {
        if e.is_panic() {
            std::panic::resume_unwind(e.into_panic());
        }
        panic!("suite task failed: {e}");
    }
}

// ---------------------------------------------------------------------------------------
// Fixtures: packages are built in code and written to a temp dir (folder or zip).
// ---------------------------------------------------------------------------------------

pub const T: &str = "d1";

pub fn tenant_id() -> TenantId {
    TenantId::new(T)
}

pub async fn setup(dir: &Directory) {
    dir.upsert_tenant(&Tenant {
        id: tenant_id(),
        name: "District One".into(),
        domains: vec!["example.org".into()],
        session_idle_secs: 1800,
        session_absolute_secs: 43_200,
        session_warning_secs: 300,
    })
    .await
    .unwrap();
}

/// A OneRoster package under construction: file name → CSV text.
#[derive(Debug, Clone)]
pub struct Pkg {
    pub version: &'static str,
    pub files: BTreeMap<String, String>,
    /// Manifest `file.*` values; files not listed are `absent`.
    pub modes: BTreeMap<String, String>,
    /// Extra manifest rows appended verbatim.
    pub manifest_extra: Vec<String>,
    /// Replace the generated manifest entirely.
    pub manifest_override: Option<String>,
}

pub const ORGS: &str = "sourcedId,status,dateLastModified,name,type,identifier,parentSourcedId
d1,,,District One,district,,
s1,,,North School,school,NCES1,d1
s2,,,South School,school,NCES2,d1
";

pub const USERS_1P1: &str = "sourcedId,status,dateLastModified,enabledUser,orgSourcedIds,role,username,userIds,givenName,familyName,middleName,identifier,email,sms,phone,agentSourcedIds,grades,password
u1,,,true,s1,student,ada,{LDAP:ada},Ada,Lovelace,,1001,Ada@Example.org,,,,7,secret
u2,,,true,s1,teacher,grace,,Grace,Hopper,,2001,grace@example.org,,,,,
u3,,,true,s2,student,alan,,Alan,Turing,,1002,alan@example.org,,,,08,
u4,,,true,d1,administrator,edsger,,Edsger,Dijkstra,,3001,edsger@example.org,,,,,
";

pub const CLASSES: &str = "sourcedId,status,dateLastModified,title,grades,courseSourcedId,classCode,classType,location,schoolSourcedId,termSourcedIds,subjects,subjectCodes,periods
c1,,,Math 7,07,co1,M7,scheduled,R1,s1,t1,math,,1
c2,,,Homeroom 8,08,co2,H8,homeroom,R2,s2,t1,,,
";

pub const ENROLLMENTS: &str = "sourcedId,status,dateLastModified,classSourcedId,schoolSourcedId,userSourcedId,role,primary,beginDate,endDate
e1,,,c1,s1,u1,student,false,2026-09-01,
e2,,,c1,s1,u2,teacher,true,,
e3,,,c2,s2,u3,student,,,
";

pub const USERS_1P2: &str = "sourcedId,status,dateLastModified,enabledUser,username,userIds,givenName,familyName,middleName,identifier,email,sms,phone,agentSourcedIds,grades,password,userMasterIdentifier,resourceSourcedIds,preferredGivenName,preferredMiddleName,preferredFamilyName,primaryOrgSourcedId,pronouns
u1,,,true,ada,,Ada,Lovelace,,1001,ada@example.org,,,,07,,M1,,Addie,,,s1,
u2,,,true,grace,,Grace,Hopper,,2001,grace@example.org,,,,,,M2,,,,,s1,
u3,,,true,alan,,Alan,Turing,,1002,alan@example.org,,,,08,,M3,,,,,s2,
";

pub const ROLES: &str = "sourcedId,status,dateLastModified,userSourcedId,roleType,role,beginDate,endDate,orgSourcedId,userProfileSourcedId
r1,,,u1,primary,student,,,s1,
r2,,,u2,primary,teacher,,,s1,
r3,,,u2,secondary,siteAdministrator,,,s2,
r4,,,u3,primary,student,,,s2,
";

impl Pkg {
    /// 1.1 bulk: orgs, users, classes, enrollments.
    pub fn v11() -> Pkg {
        let mut p = Pkg {
            version: "1.1",
            files: BTreeMap::new(),
            modes: BTreeMap::new(),
            manifest_extra: Vec::new(),
            manifest_override: None,
        };
        p.bulk("orgs", ORGS);
        p.bulk("users", USERS_1P1);
        p.bulk("classes", CLASSES);
        p.bulk("enrollments", ENROLLMENTS);
        p
    }

    /// 1.2 bulk: orgs, users, roles, classes, enrollments.
    pub fn v12() -> Pkg {
        let mut p = Pkg::v11();
        p.version = "1.2";
        p.bulk("users", USERS_1P2);
        p.bulk("roles", ROLES);
        p
    }

    /// A package with only a manifest (all files absent).
    pub fn empty(version: &'static str) -> Pkg {
        Pkg {
            version,
            files: BTreeMap::new(),
            modes: BTreeMap::new(),
            manifest_extra: Vec::new(),
            manifest_override: None,
        }
    }

    pub fn bulk(&mut self, name: &str, csv: &str) -> &mut Self {
        self.files.insert(format!("{name}.csv"), csv.to_owned());
        self.modes.insert(name.to_owned(), "bulk".into());
        self
    }

    pub fn delta(&mut self, name: &str, csv: &str) -> &mut Self {
        self.files.insert(format!("{name}.csv"), csv.to_owned());
        self.modes.insert(name.to_owned(), "delta".into());
        self
    }

    pub fn without(&mut self, name: &str) -> &mut Self {
        self.files.remove(&format!("{name}.csv"));
        self.modes.remove(name);
        self
    }

    /// Adds a file without touching the manifest.
    pub fn raw_file(&mut self, path: &str, content: &str) -> &mut Self {
        self.files.insert(path.to_owned(), content.to_owned());
        self
    }

    pub fn manifest(&self) -> String {
        if let Some(m) = &self.manifest_override {
            return m.clone();
        }
        let mut m = format!(
            "propertyName,value\nmanifest.version,1.0\noneroster.version,{}\n",
            self.version
        );
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
            "orgs",
            "resources",
            "results",
            "users",
        ] {
            let mode = self.modes.get(name).map_or("absent", String::as_str);
            m.push_str(&format!("file.{name},{mode}\n"));
        }
        if self.version == "1.2" {
            for name in ["roles", "userProfiles"] {
                let mode = self.modes.get(name).map_or("absent", String::as_str);
                m.push_str(&format!("file.{name},{mode}\n"));
            }
        }
        m.push_str("source.systemName,Test SIS\n");
        for l in &self.manifest_extra {
            m.push_str(l);
            m.push('\n');
        }
        m
    }

    fn all_files(&self) -> Vec<(String, Vec<u8>)> {
        let mut v: Vec<(String, Vec<u8>)> =
            vec![("manifest.csv".into(), self.manifest().into_bytes())];
        for (k, c) in &self.files {
            v.push((k.clone(), c.clone().into_bytes()));
        }
        v
    }

    /// Writes the package as a folder; returns (guard, path).
    pub fn write_dir(&self) -> (tempfile::TempDir, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("package");
        for (name, bytes) in self.all_files() {
            let p = root.join(&name);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, bytes).unwrap();
        }
        (tmp, root)
    }

    /// Writes the package as a zip, with every file under `folder/` when given.
    pub fn write_zip(&self, folder: Option<&str>) -> (tempfile::TempDir, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("package.zip");
        let f = std::fs::File::create(&path).unwrap();
        let mut zip = zip::ZipWriter::new(f);
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        for (name, bytes) in self.all_files() {
            let name = match folder {
                Some(d) => format!("{d}/{name}"),
                None => name,
            };
            zip.start_file(name, opts).unwrap();
            zip.write_all(&bytes).unwrap();
        }
        zip.finish().unwrap();
        (tmp, path)
    }
}

pub fn opts() -> ImportOptions {
    ImportOptions {
        now: Some(1_800_000_000),
        ..ImportOptions::default()
    }
}

/// Imports `path` into tenant d1 with `opts`.
pub async fn import_with(dir: &Directory, path: &Path, opts: &ImportOptions) -> ImportReport {
    let mut events = 0usize;
    let mut progress = |_: Progress<'_>| events += 1;
    let report = homeroom_roster::import_path(dir, &tenant_id(), path, opts, &mut progress)
        .await
        .unwrap();
    assert!(events > 0);
    report
}

/// Writes `pkg` as a folder and imports it.
pub async fn import(dir: &Directory, pkg: &Pkg) -> ImportReport {
    let (_tmp, path) = pkg.write_dir();
    import_with(dir, &path, &opts()).await
}

/// Imports and asserts success.
pub async fn import_ok(dir: &Directory, pkg: &Pkg) -> ImportReport {
    let r = import(dir, pkg).await;
    assert!(r.succeeded(), "{}", r.render_text());
    r
}

/// Imports and asserts failure.
pub async fn import_failed(dir: &Directory, pkg: &Pkg) -> ImportReport {
    let r = import(dir, pkg).await;
    assert!(!r.succeeded(), "{}", r.render_text());
    r
}

/// Every row of the tables an import writes (not the import log), as text: the
/// "byte for byte" state of the roster and the accounts.
pub async fn dump(dir: &Directory) -> Vec<String> {
    use sqlx::{Column, Row};
    let mut out = Vec::new();
    for table in [
        "accounts",
        "roster_orgs",
        "roster_users",
        "roster_roles",
        "roster_classes",
        "roster_enrollments",
    ] {
        let order = if table == "accounts" {
            "id"
        } else {
            "tenant_id, sourced_id"
        };
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT * FROM {table} ORDER BY {order}"
        )))
        .fetch_all(dir.pool())
        .await
        .unwrap();
        for row in rows {
            let mut line = format!("{table}:");
            for (i, c) in row.columns().iter().enumerate() {
                let v = if let Ok(s) = row.try_get::<Option<String>, _>(i) {
                    format!("{s:?}")
                } else if let Ok(n) = row.try_get::<Option<i64>, _>(i) {
                    format!("{n:?}")
                } else {
                    "?".into()
                };
                line.push_str(&format!(" {}={v}", c.name()));
            }
            out.push(line);
        }
    }
    out
}

pub async fn account_of(dir: &Directory, sourced_id: &str) -> Account {
    let u = dir
        .roster_user(&tenant_id(), sourced_id)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("no roster user {sourced_id}"));
    dir.get_account(u.account.as_ref().unwrap())
        .await
        .unwrap()
        .unwrap()
}

/// Asserts the report has an error at (file, line, column) with this code.
pub fn assert_error(
    r: &ImportReport,
    file: &str,
    line: Option<u64>,
    column: Option<&str>,
    code: &str,
) {
    let found = r.problems.errors.iter().any(|p| {
        p.file.ends_with(file) && p.line == line && p.column.as_deref() == column && p.code == code
    });
    assert!(
        found,
        "expected {code} at {file}:{line:?} [{column:?}], got:\n{}",
        r.render_text()
    );
}
