//! The processes and stores around a run: builds and starts `homeroom sandbox` and
//! `homeroom serve` (and npm oidc-provider) as children on free 127.0.0.1 ports, creates and
//! drops the PostgreSQL schema, picks and flushes an empty Redis database, and samples
//! RSS and CPU time from /proc. Children are killed at the end (and on drop).

use crate::{APP_REDIRECT, App, Args, DOMAIN, DirChoice, sh, workspace_root};
use anyhow::{Context, Result, bail};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

const UPSTREAM_SECRET: &str = "surge-upstream-secret-0123456789";
const READY_TIMEOUT: Duration = Duration::from_secs(90);

pub struct Env {
    pub rundir: PathBuf,
    homeroom_bin: PathBuf,
    log: String,
    directory: DirChoice,
    students: usize,
    pub directory_url: String,
    pub directory_desc: String,
    pg_admin: Option<String>,
    pg_schema: Option<String>,
    redis_admin: String,
    pub redis_db: Option<u8>,
    pub redis_desc: String,
    redis_pid: Option<u32>,
    children: Vec<(String, Child)>,
    pub homeroom_pid: u32,
    pub sandbox_pid: u32,
    pub homeroom_base: String,
    pub sandbox_base: String,
    node: Option<Child>,
    pub clk_tck: u64,
    apps: Vec<App>,
}

fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

fn tail(path: &std::path::Path, lines: usize) -> String {
    let s = std::fs::read_to_string(path).unwrap_or_default();
    let v: Vec<&str> = s.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}

impl Env {
    /// Builds the binary if needed, prepares the stores. Starts nothing yet.
    pub async fn setup(args: &Args) -> Result<Env> {
        let rundir = std::env::temp_dir().join(format!("homeroom-surge-{}", std::process::id()));
        std::fs::create_dir_all(&rundir)?;
        let homeroom_bin = match &args.homeroom_bin {
            Some(p) => p.clone(),
            None => {
                let target = std::env::var_os("CARGO_TARGET_DIR")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| workspace_root().join("target"));
                eprintln!("building homeroom (release) ...");
                let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
                let st = std::process::Command::new(cargo)
                    .args(["build", "--release", "-p", "homeroom"])
                    .current_dir(workspace_root())
                    .stdout(Stdio::null())
                    .status()
                    .context("cannot run cargo")?;
                if !st.success() {
                    bail!("cargo build --release -p homeroom failed");
                }
                target.join("release/homeroom")
            }
        };
        if !homeroom_bin.exists() {
            bail!("{} does not exist", homeroom_bin.display());
        }
        let clk_tck = sh("getconf", &["CLK_TCK"]).parse().unwrap_or(100);

        // Redis: an empty database number of our own.
        let redis_admin = args.redis.trim_end_matches('/').to_owned();
        if !redis_admin.starts_with("redis://127.0.0.1") {
            bail!("--redis must be on 127.0.0.1");
        }
        let mut redis_db = None;
        for db in (8u8..=15).rev() {
            let Ok(mut con) = redis_con(&format!("{redis_admin}/{db}")).await else {
                break;
            };
            let n: i64 = redis::cmd("DBSIZE")
                .query_async(&mut con)
                .await
                .unwrap_or(-1);
            if n == 0 {
                redis_db = Some(db);
                break;
            }
        }
        let Some(db) = redis_db else {
            bail!("Redis at {redis_admin} unreachable, or databases 8..=15 all hold keys");
        };
        let redis_pid = match redis_con(&format!("{redis_admin}/{db}")).await {
            Ok(mut con) => redis::cmd("INFO")
                .arg("server")
                .query_async::<String>(&mut con)
                .await
                .ok()
                .and_then(|s| info_field(&s, "process_id"))
                .and_then(|v| v.parse().ok()),
            Err(_) => None,
        };
        let redis_version = match redis_con(&format!("{redis_admin}/{db}")).await {
            Ok(mut con) => redis::cmd("INFO")
                .arg("server")
                .query_async::<String>(&mut con)
                .await
                .ok()
                .and_then(|s| info_field(&s, "redis_version"))
                .unwrap_or_default(),
            Err(_) => String::new(),
        };

        let (directory_url, directory_desc, pg_admin, pg_schema) = match args.directory {
            DirChoice::Sqlite => {
                let p = rundir.join("homeroom.db");
                (
                    format!("sqlite://{}", p.display()),
                    "SQLite (WAL, file in a temp dir)".to_owned(),
                    None,
                    None,
                )
            }
            DirChoice::Postgres => {
                if !args.postgres.starts_with("postgres://postgres@127.0.0.1")
                    && !args.postgres.contains("@127.0.0.1")
                {
                    bail!("--postgres must be on 127.0.0.1");
                }
                let schema = format!("surge_{}", std::process::id());
                let mut con = pg_connect(&args.postgres).await?;
                // The schema name is ours (surge_<pid>), never outside input.
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                    "DROP SCHEMA IF EXISTS {schema} CASCADE"
                )))
                .execute(&mut con)
                .await?;
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
                    .execute(&mut con)
                    .await?;
                let version: (String,) = sqlx::query_as("SHOW server_version")
                    .fetch_one(&mut con)
                    .await
                    .unwrap_or(("?".into(),));
                let sep = if args.postgres.contains('?') {
                    '&'
                } else {
                    '?'
                };
                (
                    format!("{}{sep}options=-c%20search_path%3D{schema}", args.postgres),
                    format!("PostgreSQL {} (schema {schema})", version.0),
                    Some(args.postgres.clone()),
                    Some(schema),
                )
            }
        };
        Ok(Env {
            rundir,
            homeroom_bin,
            log: args.log.clone(),
            directory: args.directory,
            students: args.students,
            directory_url,
            directory_desc,
            pg_admin,
            pg_schema,
            redis_admin: redis_admin.clone(),
            redis_db: Some(db),
            redis_desc: format!("Redis {redis_version} ({redis_admin}/{db})"),
            redis_pid,
            children: Vec::new(),
            homeroom_pid: 0,
            sandbox_pid: 0,
            homeroom_base: String::new(),
            sandbox_base: String::new(),
            node: None,
            clk_tck,
            apps: vec![
                App {
                    client_id: "surge-es".into(),
                    secret: "surge-es-secret-0123456789abcdef".into(),
                    alg: "ES256",
                },
                App {
                    client_id: "surge-rs".into(),
                    secret: "surge-rs-secret-0123456789abcdef".into(),
                    alg: "RS256",
                },
            ],
        })
    }

    pub fn app(&self, alg: &str) -> App {
        self.apps
            .iter()
            .find(|a| a.alg == alg)
            .cloned()
            .unwrap_or_else(|| self.apps[0].clone())
    }

    fn spawn(&mut self, name: &str, cmd: &mut Command) -> Result<u32> {
        let out = std::fs::File::create(self.rundir.join(format!("{name}.log")))?;
        let err = out.try_clone()?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {name}"))?;
        let pid = child.id().unwrap_or(0);
        self.children.push((name.to_owned(), child));
        Ok(pid)
    }

    async fn wait_ready(&mut self, name: &str, url: &str) -> Result<()> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(2))
            .build()?;
        let until = Instant::now() + READY_TIMEOUT;
        while Instant::now() < until {
            if let Some((_, c)) = self.children.iter_mut().find(|(n, _)| n == name)
                && let Ok(Some(st)) = c.try_wait()
            {
                bail!(
                    "{name} exited ({st}):\n{}",
                    tail(&self.rundir.join(format!("{name}.log")), 20)
                );
            }
            if let Ok(r) = http.get(url).send().await
                && r.status().is_success()
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!(
            "{name} did not answer {url} within {READY_TIMEOUT:?}:\n{}",
            tail(&self.rundir.join(format!("{name}.log")), 20)
        )
    }

    pub async fn start_upstream_and_homeroom(&mut self, args: &Args, algs: usize) -> Result<()> {
        let sport = free_port()?;
        let hport = free_port()?;
        self.sandbox_base = format!("http://127.0.0.1:{sport}");
        self.homeroom_base = format!("http://127.0.0.1:{hport}");
        let users = (self.students * algs).to_string();
        let callback = format!("{}/callback/sandbox", self.homeroom_base);
        let bin = self.homeroom_bin.clone();
        let log = self.log.clone();
        self.sandbox_pid = self.spawn(
            "sandbox",
            Command::new(&bin)
                .args(["sandbox", "--listen", &format!("127.0.0.1:{sport}")])
                .args(["--issuer", &self.sandbox_base.clone()])
                .args([
                    "--client-id",
                    "homeroom",
                    "--client-secret",
                    UPSTREAM_SECRET,
                ])
                .args([
                    "--redirect-uri",
                    &callback,
                    "--users",
                    &users,
                    "--domain",
                    DOMAIN,
                ])
                .env("RUST_LOG", &log),
        )?;
        let sb = self.sandbox_base.clone();
        self.wait_ready("sandbox", &format!("{sb}/.well-known/openid-configuration"))
            .await?;

        let db = self.redis_db.unwrap_or(15);
        let es = self.app("ES256");
        let rs = self.app("RS256");
        let config = format!(
            r#"# generated by the surge benchmark
[server]
public_url = "{hr}"
data_dir = "{data}"

[store]
directory = "{dir}"
sessions = "{redis}/{db}"

# Every student arrives from loopback, i.e. one trusted school network: give it a whole
# district's 8 a.m. budget (the default soft limit, 20,000/min, challenges above ~333
# requests/s, which a faster Homeroom reaches; a login is two limited requests).
[limits]
trusted_soft_per_minute = 60000
trusted_hard_per_minute = 60000

[tenants.surge]
name = "Surge High School"
domains = ["{DOMAIN}"]

[providers.sandbox]
tenant = "surge"
kind = "oidc"
display_name = "Surge sign-in"
issuer = "{sb}"
client_id = "homeroom"
client_secret = "{UPSTREAM_SECRET}"
trust_email = true

[apps.{es_id}]
tenant = "surge"
name = "Surge app (ES256)"
client_secret = "{es_secret}"
redirect_uris = ["{APP_REDIRECT}"]
scopes = ["openid", "profile", "email"]
id_token_alg = "ES256"

[apps.{rs_id}]
tenant = "surge"
name = "Surge app (RS256)"
client_secret = "{rs_secret}"
redirect_uris = ["{APP_REDIRECT}"]
scopes = ["openid", "profile", "email"]
id_token_alg = "RS256"
"#,
            hr = self.homeroom_base,
            data = self.rundir.display(),
            dir = self.directory_url,
            redis = self.redis_admin,
            es_id = es.client_id,
            es_secret = es.secret,
            rs_id = rs.client_id,
            rs_secret = rs.secret,
        );
        let cfg_path = self.rundir.join("homeroom.toml");
        std::fs::write(&cfg_path, config)?;
        self.homeroom_pid = self.spawn(
            "homeroom",
            Command::new(&bin)
                .arg("serve")
                .arg("--config")
                .arg(&cfg_path)
                .args(["--listen", &format!("127.0.0.1:{hport}")])
                .env("RUST_LOG", &log)
                .env_remove("HOMEROOM_LISTEN")
                .env_remove("HOMEROOM_PUBLIC_URL"),
        )?;
        let hr = self.homeroom_base.clone();
        self.wait_ready(
            "homeroom",
            &format!("{hr}/.well-known/openid-configuration"),
        )
        .await?;
        let _ = args;
        eprintln!(
            "sandbox {} (pid {}), homeroom {} (pid {}), directory {}, sessions {}/{}",
            self.sandbox_base,
            self.sandbox_pid,
            self.homeroom_base,
            self.homeroom_pid,
            match self.directory {
                DirChoice::Postgres => "postgres",
                DirChoice::Sqlite => "sqlite",
            },
            self.redis_admin,
            db
        );
        Ok(())
    }

    /// Starts npm oidc-provider (installing it into bench/node first if missing).
    pub async fn start_node(&mut self) -> Result<(String, String)> {
        let dir = workspace_root().join("bench/node");
        if !dir.join("node_modules/oidc-provider/package.json").exists() {
            eprintln!("installing oidc-provider into bench/node (npm) ...");
            let st = std::process::Command::new("npm")
                .args(["install", "--no-audit", "--no-fund"])
                .current_dir(&dir)
                .stdout(Stdio::null())
                .status()
                .context("cannot run npm")?;
            if !st.success() {
                bail!("npm install failed in {}", dir.display());
            }
        }
        let pkg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(
            dir.join("node_modules/oidc-provider/package.json"),
        )?)?;
        let version = format!(
            "oidc-provider {} on node {}",
            pkg["version"].as_str().unwrap_or("?"),
            sh("node", &["--version"])
        );
        let port = free_port()?;
        let out = std::fs::File::create(self.rundir.join("oidc-provider.log"))?;
        let err = out.try_clone()?;
        let child = Command::new("node")
            .arg("op.mjs")
            .current_dir(&dir)
            .env("OP_PORT", port.to_string())
            .env("NODE_ENV", "production")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true)
            .spawn()
            .context("cannot start node")?;
        self.children.push(("oidc-provider".into(), child));
        let base = format!("http://127.0.0.1:{port}");
        self.wait_ready(
            "oidc-provider",
            &format!("{base}/.well-known/openid-configuration"),
        )
        .await?;
        self.node = None;
        Ok((base, version))
    }

    pub async fn stop_node(&mut self) {
        if let Some(pos) = self.children.iter().position(|(n, _)| n == "oidc-provider") {
            let (_, mut c) = self.children.remove(pos);
            stop_child(&mut c).await;
        }
    }

    /// Kills the children, drops the schema, flushes our Redis database.
    pub async fn teardown(&mut self) {
        for (_, c) in self.children.iter_mut() {
            stop_child(c).await;
        }
        self.children.clear();
        if let Some(n) = self.node.as_mut() {
            stop_child(n).await;
        }
        if let (Some(url), Some(schema)) = (&self.pg_admin, &self.pg_schema)
            && let Ok(mut con) = pg_connect(url).await
        {
            let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "DROP SCHEMA IF EXISTS {schema} CASCADE"
            )))
            .execute(&mut con)
            .await;
        }
        if let Some(db) = self.redis_db
            && let Ok(mut con) = redis_con(&format!("{}/{db}", self.redis_admin)).await
        {
            let _: Result<(), _> = redis::cmd("FLUSHDB").query_async(&mut con).await;
        }
        if self.directory == DirChoice::Sqlite {
            for f in ["homeroom.db", "homeroom.db-wal", "homeroom.db-shm"] {
                let _ = std::fs::remove_file(self.rundir.join(f));
            }
        }
        eprintln!("logs kept in {}", self.rundir.display());
    }

    // ---- measurements ---------------------------------------------------------------

    pub async fn redis_snapshot(&self) -> RedisSnap {
        let Some(db) = self.redis_db else {
            return RedisSnap::default();
        };
        let Ok(mut con) = redis_con(&format!("{}/{db}", self.redis_admin)).await else {
            return RedisSnap::default();
        };
        let info: String = redis::cmd("INFO")
            .arg("memory")
            .query_async(&mut con)
            .await
            .unwrap_or_default();
        let keys: i64 = redis::cmd("DBSIZE")
            .query_async(&mut con)
            .await
            .unwrap_or(0);
        RedisSnap {
            used_memory: info_field(&info, "used_memory")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            keys: u64::try_from(keys).unwrap_or(0),
        }
    }

    /// Bytes per login from INFO (server-wide delta) and from MEMORY USAGE of sampled keys.
    pub async fn redis_figures(
        &self,
        before: &RedisSnap,
        after: &RedisSnap,
        logins: usize,
    ) -> RedisFigures {
        let mut f = RedisFigures {
            keys_added: after.keys.saturating_sub(before.keys),
            used_memory_delta: i128::from(after.used_memory) - i128::from(before.used_memory),
            ..Default::default()
        };
        let Some(db) = self.redis_db else { return f };
        let Ok(mut con) = redis_con(&format!("{}/{db}", self.redis_admin)).await else {
            return f;
        };
        // Sample up to 2,000 keys with SCAN (bounded iterations).
        let mut cursor: u64 = 0;
        let mut sampled: Vec<String> = Vec::new();
        for _ in 0..200 {
            let (next, batch): (u64, Vec<String>) = match redis::cmd("SCAN")
                .arg(cursor)
                .arg("COUNT")
                .arg(500)
                .query_async(&mut con)
                .await
            {
                Ok(v) => v,
                Err(_) => break,
            };
            sampled.extend(batch);
            cursor = next;
            if cursor == 0 || sampled.len() >= 2000 {
                break;
            }
        }
        sampled.truncate(2000);
        let mut by_prefix: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        let mut total = 0u64;
        for k in &sampled {
            let bytes: Option<u64> = redis::cmd("MEMORY")
                .arg("USAGE")
                .arg(k)
                .arg("SAMPLES")
                .arg(0)
                .query_async(&mut con)
                .await
                .ok()
                .flatten();
            let b = bytes.unwrap_or(0);
            total += b;
            let prefix = k.split(':').next().unwrap_or("").to_owned();
            let e = by_prefix.entry(prefix).or_default();
            e.0 += 1;
            e.1 += b;
        }
        f.sampled_keys = sampled.len() as u64;
        f.total_keys = after.keys;
        if !sampled.is_empty() {
            f.avg_key_bytes = total as f64 / sampled.len() as f64;
        }
        if logins > 0 {
            f.keys_per_login = f.keys_added as f64 / logins as f64;
            f.bytes_per_login_sampled = f.avg_key_bytes * f.keys_per_login;
            f.bytes_per_login_info = f.used_memory_delta as f64 / logins as f64;
        }
        f.by_prefix = by_prefix
            .into_iter()
            .map(|(p, (n, b))| (p, n, b.checked_div(n).unwrap_or(0)))
            .collect();
        f
    }

    pub fn cpu_snapshot(&self) -> CpuSnap {
        let mut m = BTreeMap::new();
        m.insert(
            "homeroom".to_owned(),
            crate::cpu_ticks(self.homeroom_pid).unwrap_or(0),
        );
        m.insert(
            "sandbox".to_owned(),
            crate::cpu_ticks(self.sandbox_pid).unwrap_or(0),
        );
        m.insert(
            "bench".to_owned(),
            crate::cpu_ticks(std::process::id()).unwrap_or(0),
        );
        if let Some(p) = self.redis_pid {
            m.insert("redis".to_owned(), crate::cpu_ticks(p).unwrap_or(0));
        }
        m.insert("postgres".to_owned(), postgres_ticks());
        if let Some(pid) = self.node.as_ref().and_then(Child::id) {
            m.insert(
                "oidc-provider".to_owned(),
                crate::cpu_ticks(pid).unwrap_or(0),
            );
        }
        CpuSnap {
            per: m,
            machine: crate::machine_ticks(),
        }
    }

    /// CPU ticks used since `before`, per process and for the whole machine.
    pub fn cpu_since(&self, before: &CpuSnap) -> Vec<(String, u64)> {
        let now = self.cpu_snapshot();
        let mut v: Vec<(String, u64)> = now
            .per
            .iter()
            .map(|(k, t)| {
                (
                    k.clone(),
                    t.saturating_sub(*before.per.get(k).unwrap_or(&0)),
                )
            })
            .collect();
        if self.directory == DirChoice::Sqlite {
            v.retain(|(k, _)| k != "postgres");
        }
        v.push((
            "machine".into(),
            now.machine.0.saturating_sub(before.machine.0),
        ));
        v
    }

    pub fn machine_busy_pct_since(&self, before: &CpuSnap) -> f64 {
        let (b, t) = crate::machine_ticks();
        let db = b.saturating_sub(before.machine.0) as f64;
        let dt = t.saturating_sub(before.machine.1) as f64;
        if dt > 0.0 { 100.0 * db / dt } else { 0.0 }
    }

    /// Polls Homeroom's VmRSS every 20 ms until stopped; returns the peak in kB.
    pub fn rss_sampler(&self) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(0));
        let pid = self.homeroom_pid;
        let (s, p) = (stop.clone(), peak.clone());
        let task = tokio::spawn(async move {
            // Bounded: at most one hour of samples.
            for _ in 0..180_000 {
                if s.load(Ordering::Relaxed) {
                    break;
                }
                if let Some(kb) = crate::status_kb(pid, "VmRSS:") {
                    p.fetch_max(kb, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        RssSampler { stop, peak, task }
    }
}

async fn stop_child(c: &mut Child) {
    if let Some(pid) = c.id() {
        // SIGTERM first (graceful: Homeroom flushes its audit log), SIGKILL after 3 s.
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
        if tokio::time::timeout(Duration::from_secs(3), c.wait())
            .await
            .is_ok()
        {
            return;
        }
    }
    let _ = c.start_kill();
    let _ = tokio::time::timeout(Duration::from_secs(3), c.wait()).await;
}

fn postgres_ticks() -> u64 {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut sum = 0;
    for e in rd.flatten().take(100_000) {
        let name = e.file_name();
        let Some(pid) = name.to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let comm = crate::read_proc(&format!("/proc/{pid}/comm"));
        if comm.trim() == "postgres" {
            sum += crate::cpu_ticks(pid).unwrap_or(0);
        }
    }
    sum
}

pub struct RssSampler {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl RssSampler {
    pub async fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        self.peak.load(Ordering::Relaxed)
    }
}

#[derive(Debug, Default, Clone)]
pub struct CpuSnap {
    per: BTreeMap<String, u64>,
    machine: (u64, u64),
}

#[derive(Debug, Default, Clone, Copy)]
pub struct RedisSnap {
    pub used_memory: u64,
    pub keys: u64,
}

#[derive(Debug, Default, Clone)]
pub struct RedisFigures {
    pub keys_added: u64,
    pub total_keys: u64,
    pub used_memory_delta: i128,
    pub sampled_keys: u64,
    pub avg_key_bytes: f64,
    pub keys_per_login: f64,
    pub bytes_per_login_sampled: f64,
    pub bytes_per_login_info: f64,
    /// (prefix, sampled keys, average bytes)
    pub by_prefix: Vec<(String, u64, u64)>,
}

fn info_field(info: &str, key: &str) -> Option<String> {
    info.lines().find_map(|l| {
        l.strip_prefix(&format!("{key}:"))
            .map(|v| v.trim().to_owned())
    })
}

async fn redis_con(url: &str) -> Result<redis::aio::MultiplexedConnection> {
    let client = redis::Client::open(url)?;
    Ok(tokio::time::timeout(
        Duration::from_secs(5),
        client.get_multiplexed_async_connection(),
    )
    .await
    .context("redis connect timeout")??)
}

async fn pg_connect(url: &str) -> Result<sqlx::PgConnection> {
    use sqlx::Connection as _;
    tokio::time::timeout(Duration::from_secs(10), sqlx::PgConnection::connect(url))
        .await
        .context("postgres connect timeout")?
        .with_context(|| format!("cannot connect to {url}"))
}

/// `perf record` on Homeroom for the length of one surge.
pub struct PerfRecorder {
    child: Child,
    file: PathBuf,
}

impl PerfRecorder {
    pub async fn start(env: &Env, alg: &str) -> Option<PerfRecorder> {
        let file = env.rundir.join(format!("perf-{alg}.data"));
        let child = Command::new("perf")
            .args(["record", "-F", "499", "-g", "-o"])
            .arg(&file)
            .args(["-p", &env.homeroom_pid.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .ok()?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        Some(PerfRecorder { child, file })
    }

    /// Stops recording and returns the flat profile's top lines.
    pub async fn finish(mut self) -> String {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-INT", &pid.to_string()])
                .status();
        }
        let _ = tokio::time::timeout(Duration::from_secs(20), self.child.wait()).await;
        let out = std::process::Command::new("perf")
            .args([
                "report",
                "--stdio",
                "--no-children",
                "--sort",
                "dso,symbol",
                "-g",
                "none",
                "--percent-limit",
                "0.8",
                "-i",
            ])
            .arg(&self.file)
            .output();
        match out {
            Ok(o) => String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
                .take(40)
                .map(|l| {
                    // perf pads the symbol column to the terminal width and appends "-  -".
                    let l = l.trim_end().trim_end_matches(['-', ' ']);
                    l.split("  ")
                        .filter(|p| !p.is_empty())
                        .collect::<Vec<_>>()
                        .join("  ")
                })
                .collect::<Vec<_>>()
                .join("\n"),
            Err(e) => format!("perf report failed: {e}"),
        }
    }
}
