//! The printed report (Markdown, so it can be appended to bench/RESULTS.md as is), the
//! machine description and the goal checks of issue 5.

use crate::load::LoadResult;
use crate::{Args, Results, sh, workspace_root};
use std::fmt::Write as _;
use std::time::Duration;

fn machine() -> String {
    let cpu = crate::read_proc("/proc/cpuinfo")
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_owned())
        .unwrap_or_else(|| "?".into());
    let mem_kb = crate::status_like("/proc/meminfo", "MemTotal:");
    let nproc = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let rev = sh("git", &["rev-parse", "--short", "HEAD"]);
    let dirty = if sh("git", &["status", "--porcelain", "--untracked-files=no"]).is_empty() {
        ""
    } else {
        " (+ uncommitted changes)"
    };
    let kernel = sh("uname", &["-r"]);
    format!(
        "{nproc} CPUs ({cpu}), {:.1} GiB RAM, Linux {kernel}, git {rev}{dirty}",
        mem_kb as f64 / 1024.0 / 1024.0
    )
}

fn now_utc() -> String {
    let f = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second] UTC");
    time::OffsetDateTime::now_utc()
        .format(&f)
        .unwrap_or_default()
}

fn command_line() -> String {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut s = "cargo run --release -p homeroom-bench --".to_owned();
    for a in args {
        s.push(' ');
        s.push_str(&a);
    }
    s
}

fn ok(b: bool) -> &'static str {
    if b { "met" } else { "NOT met" }
}

pub fn render(args: &Args, r: &Results, elapsed: Duration) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "## Surge run {}\n", now_utc());
    let _ = writeln!(o, "- command: `{}`", command_line());
    let _ = writeln!(o, "- machine: {}", machine());
    let _ = writeln!(
        o,
        "- stores: directory {}, sessions {}",
        r.directory_desc, r.redis_desc
    );
    let _ = writeln!(
        o,
        "- load generator, Homeroom, sandbox upstream, Redis and the database all share this machine; run took {:.0} s",
        elapsed.as_secs_f64()
    );
    let _ = writeln!(
        o,
        "- /proc/loadavg at the start: `{}` (anything above ~0.5 means other work, e.g. a build, shared the cores)",
        r.loadavg_start
    );
    if !args.note.is_empty() {
        let _ = writeln!(o, "- note: {}", args.note);
    }
    let _ = writeln!(
        o,
        "\n### Full logins (authorize -> sandbox -> callback -> token -> userinfo)\n"
    );
    let _ = writeln!(
        o,
        "| alg | students | conc. | ok | errors | logins/s | p50 ms | p95 ms | p99 ms | max ms | Homeroom peak RSS MB (HWM) | Redis B/login (MEMORY USAGE) | Redis B/login (INFO delta) | keys/login |"
    );
    let _ = writeln!(
        o,
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for s in &r.surges {
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {} | {:.0} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} ({:.1}) | {:.0} | {:.0} | {:.2} |",
            s.alg,
            s.students,
            s.concurrency,
            s.ok,
            s.errors,
            s.logins_per_sec,
            s.latency.p50,
            s.latency.p95,
            s.latency.p99,
            s.latency.max,
            s.rss_peak_kb as f64 / 1024.0,
            s.hwm_kb as f64 / 1024.0,
            s.redis.bytes_per_login_sampled,
            s.redis.bytes_per_login_info,
            s.redis.keys_per_login,
        );
    }
    for s in &r.surges {
        if !s.error_kinds.is_empty() {
            let _ = writeln!(o, "\nErrors ({}):", s.alg);
            for (k, n) in s.error_kinds.iter().take(10) {
                let _ = writeln!(o, "- {n} x {k}");
            }
        }
    }
    let _ = writeln!(
        o,
        "\nPer step (ms, p50 / p99), and CPU per login (ms) by process:\n"
    );
    let _ = writeln!(
        o,
        "| alg | authorize | upstream (sandbox) | callback | token | userinfo | CPU ms/login | machine busy |"
    );
    let _ = writeln!(o, "|---|---|---|---|---|---|---|---|");
    for s in &r.surges {
        let steps: Vec<String> = s
            .steps
            .iter()
            .map(|(_, m)| format!("{:.2} / {:.2}", m.p50, m.p99))
            .collect();
        let mut cpu: Vec<String> = s
            .cpu_ms_per_login
            .iter()
            .map(|(k, v)| format!("{k} {v:.2}"))
            .collect();
        let known: f64 = s
            .cpu_ms_per_login
            .iter()
            .filter(|(k, _)| k != "machine")
            .map(|(_, v)| v)
            .sum();
        if let Some((_, m)) = s.cpu_ms_per_login.iter().find(|(k, _)| k == "machine") {
            cpu.push(format!("(other processes {:.2})", (m - known).max(0.0)));
        }
        let _ = writeln!(
            o,
            "| {} | {} | {:.0}% |",
            s.alg,
            steps.join(" | ") + " | " + &cpu.join(", "),
            s.machine_busy_pct
        );
    }
    for s in &r.surges {
        if !s.redis.by_prefix.is_empty() {
            let p: Vec<String> = s
                .redis
                .by_prefix
                .iter()
                .map(|(k, n, b)| format!("`{k}:` {n} keys ~{b} B"))
                .collect();
            let _ = writeln!(
                o,
                "\nRedis after {} ({} keys in the bench's database, {} sampled): {}",
                s.alg,
                s.redis.total_keys,
                s.redis.sampled_keys,
                p.join(", ")
            );
        }
    }

    if !r.loads.is_empty() {
        let _ = writeln!(
            o,
            "\n### Fixed-endpoint loads ({} connections, {:.1} s each)\n",
            args.load_concurrency, args.duration
        );
        let _ = writeln!(
            o,
            "| endpoint | server | req/s | p50 ms | p99 ms | errors | vs oidc-provider | CPU µs/request |"
        );
        let _ = writeln!(o, "|---|---|---|---|---|---|---|---|");
        let row = |o: &mut String, l: &LoadResult, server: &str, ratio: Option<f64>| {
            let _ = writeln!(
                o,
                "| {} | {} | {:.0} | {:.2} | {:.2} | {}{} | {} | {} |",
                l.name,
                server,
                l.rps,
                l.latency.p50,
                l.latency.p99,
                l.errors,
                l.first_error
                    .as_ref()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default(),
                ratio.map(|x| format!("{x:.2}x")).unwrap_or_default(),
                l.cpu_us_per_req
                    .iter()
                    .filter(|(_, us)| *us >= 0.05)
                    .map(|(k, us)| format!("{k} {us:.1}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        };
        for l in &r.loads {
            let node = r.node_loads.iter().find(|n| n.name == l.name);
            let ratio = node.filter(|n| n.rps > 0.0).map(|n| l.rps / n.rps);
            row(&mut o, l, "Homeroom", ratio);
        }
        for l in &r.node_loads {
            row(&mut o, l, "oidc-provider", None);
        }
        if !r.node_version.is_empty() {
            let _ = writeln!(o, "\noidc-provider: {}", r.node_version);
        }
    }

    // Goals of issue 5.
    let _ = writeln!(
        o,
        "\n### Against the goals (issue 5, 2-core machine, load generator included)\n"
    );
    let returning = format!("ES256 {}", crate::RETURNING);
    for (alg, label) in [
        ("ES256", "ES256 >= 2,000 logins/s, p99 < 50 ms, no errors"),
        (
            returning.as_str(),
            "the same, returning students (accounts exist)",
        ),
    ] {
        if let Some(es) = r.surges.iter().find(|s| s.alg == alg) {
            let _ = writeln!(
                o,
                "- {label}: {:.0}/s, p99 {:.1} ms, {} errors -> {}",
                es.logins_per_sec,
                es.latency.p99,
                es.errors,
                ok(es.logins_per_sec >= 2000.0 && es.latency.p99 < 50.0 && es.errors == 0)
            );
        }
    }
    if let Some(rs) = r.surges.iter().find(|s| s.alg == "RS256") {
        let hr_cpu = rs
            .cpu_ms_per_login
            .iter()
            .find(|(k, _)| k == "homeroom")
            .map(|(_, v)| *v)
            .unwrap_or(0.0);
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1) as f64;
        if hr_cpu > 0.0 {
            let ceiling = cores * 1000.0 / hr_cpu;
            let _ = writeln!(
                o,
                "- RS256: {:.0}/s, p99 {:.1} ms; Homeroom alone spends {:.2} CPU ms per login, so with all {} cores to itself it would top out near {:.0}/s: measured is {:.0}% of that ceiling",
                rs.logins_per_sec,
                rs.latency.p99,
                hr_cpu,
                cores,
                ceiling,
                100.0 * rs.logins_per_sec / ceiling
            );
        }
    }
    if let Some(i) = r.loads.iter().find(|l| l.name.starts_with("introspection")) {
        let _ = writeln!(
            o,
            "- introspection >= 50,000 req/s, p99 < 5 ms: {:.0}/s, p99 {:.2} ms -> {}",
            i.rps,
            i.latency.p99,
            ok(i.rps >= 50_000.0 && i.latency.p99 < 5.0 && i.errors == 0)
        );
    }
    let peak = r.surges.iter().map(|s| s.rss_peak_kb).max().unwrap_or(0);
    let _ = writeln!(
        o,
        "- RSS < 100 MB during the surge: peak {:.1} MB -> {}",
        peak as f64 / 1024.0,
        ok(peak > 0 && peak < 100 * 1024)
    );
    for l in &r.loads {
        if let Some(n) = r.node_loads.iter().find(|n| n.name == l.name)
            && n.rps > 0.0
        {
            let _ = writeln!(
                o,
                "- >= 5x oidc-provider on {}: {:.2}x -> {}",
                l.name,
                l.rps / n.rps,
                ok(l.rps / n.rps >= 5.0)
            );
        }
    }
    if !r.perf_tops.is_empty() {
        for (alg, top) in &r.perf_tops {
            let _ = writeln!(
                o,
                "\n<details><summary>perf: Homeroom's hottest symbols during the {alg} phase</summary>\n\n```\n{top}\n```\n</details>"
            );
        }
    }
    o
}

pub fn append(_args: &Args, text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let path = workspace_root().join("bench/RESULTS.md");
    let new = !path.exists();
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)?;
    if new {
        writeln!(
            f,
            "# Surge benchmark results\n\nEach run appends a section (newest last). See README.md for what is measured.\n"
        )?;
    }
    writeln!(f, "\n{text}")?;
    Ok(())
}
