//! Benchmark (not a test): generates a OneRoster 1.1 bulk package with N users (default
//! 100,000: 95% students, 5% teachers, 50 schools, one homeroom class per 25 students,
//! one enrollment per person), imports it into a fresh SQLite file and prints the times,
//! then imports it again (the idempotent re-import) and times that too.
//!
//! `cargo run --release -p homeroom-roster --example bench_import -- --users 100000 [--zip] [--postgres URL]`

use anyhow::{Context, Result, bail};
use homeroom_core::TenantId;
use homeroom_directory::{Directory, Tenant};
use homeroom_roster::{ImportOptions, Progress, import_path};
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use std::time::Instant;

fn generate(dir: &Path, users: usize, zip: bool) -> Result<std::path::PathBuf> {
    let schools = 50usize;
    let mut orgs = String::from(
        "sourcedId,status,dateLastModified,name,type,identifier,parentSourcedId\nd1,,,District,district,,\n",
    );
    for s in 0..schools {
        writeln!(orgs, "s{s},,,School {s},school,NCES{s},d1")?;
    }
    let mut u = String::from(
        "sourcedId,status,dateLastModified,enabledUser,orgSourcedIds,role,username,userIds,givenName,familyName,middleName,identifier,email,sms,phone,agentSourcedIds,grades,password\n",
    );
    let mut classes = String::from(
        "sourcedId,status,dateLastModified,title,grades,courseSourcedId,classCode,classType,location,schoolSourcedId,termSourcedIds,subjects,subjectCodes,periods\n",
    );
    let mut enr = String::from(
        "sourcedId,status,dateLastModified,classSourcedId,schoolSourcedId,userSourcedId,role,primary,beginDate,endDate\n",
    );
    let class_size = 25usize;
    let n_classes = users.div_ceil(class_size).max(1);
    for c in 0..n_classes {
        writeln!(
            classes,
            "c{c},,,Homeroom {c},07,co1,H{c},homeroom,R{c},s{},t1,,,",
            c % schools
        )?;
    }
    for i in 0..users {
        let teacher = i % 20 == 0;
        let role = if teacher { "teacher" } else { "student" };
        let class = i / class_size;
        let school = class % schools;
        writeln!(
            u,
            "u{i},,,true,s{school},{role},user{i},{{LDAP:user{i}}},Given{i},Family{i},,{i},user{i}@example.org,,,,07,"
        )?;
        writeln!(
            enr,
            "e{i},,,c{class},s{school},u{i},{role},{},,",
            if teacher { "true" } else { "false" }
        )?;
    }
    let manifest = "propertyName,value\nmanifest.version,1.0\noneroster.version,1.1\nfile.orgs,bulk\nfile.users,bulk\nfile.classes,bulk\nfile.enrollments,bulk\nfile.academicSessions,absent\nfile.courses,absent\n";
    let files = [
        ("manifest.csv", manifest.to_owned()),
        ("orgs.csv", orgs),
        ("users.csv", u),
        ("classes.csv", classes),
        ("enrollments.csv", enr),
    ];
    if zip {
        let path = dir.join("package.zip");
        let mut w = zip::ZipWriter::new(std::fs::File::create(&path)?);
        let o = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        for (name, text) in files {
            w.start_file(name, o)?;
            w.write_all(text.as_bytes())?;
        }
        w.finish()?;
        Ok(path)
    } else {
        let path = dir.join("package");
        std::fs::create_dir_all(&path)?;
        for (name, text) in files {
            std::fs::write(path.join(name), text)?;
        }
        Ok(path)
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let mut users = 100_000usize;
    let mut zip = false;
    let mut url: Option<String> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--users" => users = args.next().context("--users N")?.parse()?,
            "--zip" => zip = true,
            "--postgres" => url = Some(args.next().context("--postgres URL")?),
            other => bail!("unknown argument {other}"),
        }
    }
    let tmp = tempfile::tempdir()?;
    let t0 = Instant::now();
    let pkg = generate(tmp.path(), users, zip)?;
    eprintln!(
        "generated {users} users in {:.2?} at {}",
        t0.elapsed(),
        pkg.display()
    );

    let url = url.unwrap_or_else(|| format!("sqlite://{}/bench.db", tmp.path().display()));
    let dir = Directory::connect(&url).await?;
    let tenant = TenantId::new("bench");
    dir.upsert_tenant(&Tenant {
        id: tenant.clone(),
        name: "Bench".into(),
        domains: vec![],
        session_idle_secs: 1800,
        session_absolute_secs: 43_200,
        session_warning_secs: 300,
    })
    .await?;

    for round in ["first import", "re-import (no changes)"] {
        let start = Instant::now();
        let mut marks: Vec<(String, std::time::Duration)> = Vec::new();
        let mut progress = |p: Progress<'_>| match p {
            Progress::Planning => marks.push(("parsed".into(), start.elapsed())),
            Progress::Applying { writes } => {
                marks.push((format!("planned ({writes} writes)"), start.elapsed()))
            }
            Progress::Done => marks.push(("applied".into(), start.elapsed())),
            _ => {}
        };
        let report = import_path(
            &dir,
            &tenant,
            &pkg,
            &ImportOptions::default(),
            &mut progress,
        )
        .await?;
        let total = start.elapsed();
        if !report.succeeded() {
            bail!("import failed:\n{}", report.render_text());
        }
        let s = report.summary();
        println!(
            "{round}: {users} users in {:.2} s ({} added, {} updated, {} deactivated, {} conflicts)",
            total.as_secs_f64(),
            s.added,
            s.updated,
            s.deactivated,
            s.conflicts
        );
        for (what, at) in marks {
            println!("  {what:>28} at {:.2} s", at.as_secs_f64());
        }
    }
    println!(
        "accounts in tenant: {}",
        dir.count_accounts(Some(&tenant)).await?
    );
    dir.close().await;
    Ok(())
}
