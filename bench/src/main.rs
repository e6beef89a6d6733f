//! `surge`: the morning-bell benchmark. Starts the sandbox upstream (`homeroom sandbox`) and
//! Homeroom (`homeroom serve`, release build) as child processes on 127.0.0.1, signs N
//! students in through the whole flow at a fixed concurrency, runs fixed-endpoint loads,
//! runs the same discovery/JWKS load against npm `oidc-provider`, prints the figures and
//! appends them to `bench/RESULTS.md`. See `bench/README.md`.
//!
//! Every loop is bounded in count and in time; nothing leaves 127.0.0.1.

mod flow;
mod load;
mod procs;
mod report;
mod stats;

use anyhow::{Context, Result, bail};
use clap::{Parser, ValueEnum};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Command-line options.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "surge",
    about = "Homeroom's surge benchmark (see bench/README.md)"
)]
pub struct Args {
    /// Students signing in per algorithm (each a full flow with its own cookie jar).
    #[arg(long, default_value_t = 2000)]
    pub students: usize,
    /// Logins in flight at once.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Token algorithm(s) of the app the students sign in to.
    #[arg(long, value_enum, default_value_t = AlgChoice::Both)]
    pub alg: AlgChoice,
    /// Homeroom's directory.
    #[arg(long, value_enum, default_value_t = DirChoice::Postgres)]
    pub directory: DirChoice,
    /// PostgreSQL server/database (a fresh schema is created in it and dropped at the end).
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/test")]
    pub postgres: String,
    /// Redis server (the bench picks an empty database number 8..=15 on it and flushes
    /// that database at the end).
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    pub redis: String,
    /// Seconds per fixed-endpoint load.
    #[arg(long, default_value_t = 5.0)]
    pub duration: f64,
    /// Connections in flight during the fixed-endpoint loads.
    #[arg(long, default_value_t = 64)]
    pub load_concurrency: usize,
    /// Upper bound on the whole surge phase of one algorithm, seconds.
    #[arg(long, default_value_t = 300)]
    pub max_surge_secs: u64,
    /// Skip the oidc-provider comparison.
    #[arg(long)]
    pub no_node: bool,
    /// Skip the fixed-endpoint loads.
    #[arg(long)]
    pub no_load: bool,
    /// Skip the second pass of each algorithm, in which the same students sign in again
    /// with fresh cookie jars (accounts and provider links exist: an ordinary morning,
    /// where the first pass is a new school's first morning).
    #[arg(long)]
    pub no_returning: bool,
    /// Record Homeroom with `perf record` during each surge and print its hottest symbols.
    #[arg(long)]
    pub perf: bool,
    /// The homeroom binary (default: `target/release/homeroom`, built first with cargo).
    #[arg(long)]
    pub homeroom_bin: Option<PathBuf>,
    /// RUST_LOG for Homeroom and the sandbox.
    #[arg(long, default_value = "info,sqlx=warn")]
    pub log: String,
    /// Do not append to bench/RESULTS.md.
    #[arg(long)]
    pub no_record: bool,
    /// A free-text note stored with the results.
    #[arg(long, default_value = "")]
    pub note: String,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlgChoice {
    Es256,
    Rs256,
    Both,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirChoice {
    Postgres,
    Sqlite,
}

/// The bench domain of the synthetic school.
pub const DOMAIN: &str = "surge.homeroom.test";
/// Where the apps' redirect URI points (nothing listens; the code is read from `Location`).
pub const APP_REDIRECT: &str = "http://127.0.0.1:9/cb";

/// One downstream app registered in Homeroom.
#[derive(Debug, Clone)]
pub struct App {
    pub client_id: String,
    pub secret: String,
    pub alg: &'static str,
}

/// Suffix of the `alg` label of a returning pass ("ES256 returning").
pub const RETURNING: &str = "returning";

pub fn workspace_root() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    if args.students == 0 || args.concurrency == 0 || args.load_concurrency == 0 {
        bail!("--students, --concurrency and --load-concurrency must be positive");
    }
    if !(0.5..=600.0).contains(&args.duration) {
        bail!("--duration must be between 0.5 and 600 seconds");
    }
    let started = Instant::now();
    let mut env = procs::Env::setup(&args).await?;
    let outcome = run(&args, &mut env).await;
    env.teardown().await;
    let results = outcome?;
    let text = report::render(&args, &results, started.elapsed());
    println!("{text}");
    if !args.no_record {
        report::append(&args, &text)?;
        println!(
            "appended to {}",
            workspace_root().join("bench/RESULTS.md").display()
        );
    }
    Ok(())
}

/// Everything one run measured.
#[derive(Debug, Default)]
pub struct Results {
    pub surges: Vec<flow::SurgeResult>,
    pub loads: Vec<load::LoadResult>,
    pub node_loads: Vec<load::LoadResult>,
    pub node_version: String,
    pub perf_tops: Vec<(String, String)>,
    pub directory_desc: String,
    pub redis_desc: String,
    pub clk_tck: u64,
    /// /proc/loadavg when the run started (other work on the machine skews every figure).
    pub loadavg_start: String,
}

async fn run(args: &Args, env: &mut procs::Env) -> Result<Results> {
    let algs: Vec<&'static str> = match args.alg {
        AlgChoice::Es256 => vec!["ES256"],
        AlgChoice::Rs256 => vec!["RS256"],
        AlgChoice::Both => vec!["ES256", "RS256"],
    };
    env.start_upstream_and_homeroom(args, algs.len()).await?;
    let http = flow::client(args.concurrency.max(args.load_concurrency))?;
    let ctx = Arc::new(flow::Ctx {
        http: http.clone(),
        hr: env.homeroom_base.clone(),
        sandbox: env.sandbox_base.clone(),
    });
    let mut results = Results {
        directory_desc: env.directory_desc.clone(),
        redis_desc: env.redis_desc.clone(),
        clk_tck: env.clk_tck,
        loadavg_start: read_proc("/proc/loadavg").trim().to_owned(),
        ..Default::default()
    };
    let mut tokens: Vec<(App, String)> = Vec::new();
    for (k, alg) in algs.iter().enumerate() {
        let app = env.app(alg);
        // Disjoint students per algorithm: every login is a first sign-in of that student.
        let first = k * args.students;
        eprintln!(
            "surge {alg}: {} students, concurrency {} ...",
            args.students, args.concurrency
        );
        let perf = if args.perf {
            procs::PerfRecorder::start(env, alg).await
        } else {
            None
        };
        let r = flow::surge(ctx.clone(), env, &app, first, args).await?;
        if let Some(p) = perf {
            results.perf_tops.push((alg.to_string(), p.finish().await));
        }
        eprintln!(
            "  {} ok, {} errors, {:.0} logins/s",
            r.ok, r.errors, r.logins_per_sec
        );
        if let Some(t) = r.sample_token.clone() {
            tokens.push((app.clone(), t));
        }
        results.surges.push(r);
        if !args.no_returning {
            eprintln!("surge {alg}, the same students again (returning) ...");
            let mut again = flow::surge(ctx.clone(), env, &app, first, args).await?;
            eprintln!(
                "  {} ok, {} errors, {:.0} logins/s",
                again.ok, again.errors, again.logins_per_sec
            );
            again.alg = format!("{alg} {RETURNING}");
            results.surges.push(again);
        }
    }
    if !args.no_load {
        let dur = Duration::from_secs_f64(args.duration);
        let c = args.load_concurrency;
        let hr = env.homeroom_base.clone();
        results.loads.push(
            load::run_get(
                env,
                "discovery",
                &format!("{hr}/.well-known/openid-configuration"),
                None,
                dur,
                c,
            )
            .await,
        );
        results
            .loads
            .push(load::run_get(env, "jwks", &format!("{hr}/oauth2/jwks"), None, dur, c).await);
        // Prefer the ES256 token (the goal's algorithm); fall back to whatever we have.
        let tok = tokens
            .iter()
            .find(|(a, _)| a.alg == "ES256")
            .or_else(|| tokens.first())
            .cloned();
        match tok {
            Some((app, token)) => {
                let perf = if args.perf {
                    procs::PerfRecorder::start(env, "introspection").await
                } else {
                    None
                };
                results
                    .loads
                    .push(load::run_introspect(env, &hr, &app, &token, dur, c).await);
                if let Some(p) = perf {
                    results
                        .perf_tops
                        .push(("introspection load".to_owned(), p.finish().await));
                }
                results.loads.push(
                    load::run_get(
                        env,
                        &format!("userinfo ({})", app.alg),
                        &format!("{hr}/oauth2/userinfo"),
                        Some(&token),
                        dur,
                        c,
                    )
                    .await,
                );
            }
            None => eprintln!(
                "no valid access token from the surge: introspection/userinfo loads skipped"
            ),
        }
        if !args.no_node {
            match env.start_node().await {
                Ok((base, version)) => {
                    results.node_version = version;
                    results.node_loads.push(
                        load::run_get(
                            env,
                            "discovery",
                            &format!("{base}/.well-known/openid-configuration"),
                            None,
                            dur,
                            c,
                        )
                        .await,
                    );
                    results.node_loads.push(
                        load::run_get(env, "jwks", &format!("{base}/jwks"), None, dur, c).await,
                    );
                    env.stop_node().await;
                }
                Err(e) => {
                    eprintln!("oidc-provider not started: {e:#}");
                    results.node_version = format!("not started: {e:#}");
                }
            }
        }
    }
    Ok(results)
}

/// Reads a `/proc` file to a string (empty on error).
pub fn read_proc(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// `Key:  value kB` from /proc/PID/status, in kB.
pub fn status_kb(pid: u32, key: &str) -> Option<u64> {
    read_proc(&format!("/proc/{pid}/status"))
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// utime + stime of a process, in clock ticks.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let s = read_proc(&format!("/proc/{pid}/stat"));
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = s.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state); utime is field 14, stime 15.
    let u: u64 = f.get(11)?.parse().ok()?;
    let st: u64 = f.get(12)?.parse().ok()?;
    Some(u + st)
}

/// (busy, total) jiffies of the whole machine from /proc/stat.
pub fn machine_ticks() -> (u64, u64) {
    let s = read_proc("/proc/stat");
    let Some(line) = s.lines().next() else {
        return (0, 0);
    };
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    (total.saturating_sub(idle), total)
}

/// Runs a command and returns its trimmed stdout (empty on failure).
pub fn sh(cmd: &str, args: &[&str]) -> String {
    std::process::Command::new(cmd)
        .args(args)
        .current_dir(workspace_root())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

pub fn context_err<T>(r: Option<T>, what: &str) -> Result<T> {
    r.with_context(|| what.to_owned())
}

/// A `Key: value` number from a /proc file such as /proc/meminfo.
pub fn status_like(path: &str, key: &str) -> u64 {
    read_proc(path)
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}
