//! `homeroom`: the command line. Parses arguments and hands over to the library.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use homeroom::config;
use std::path::PathBuf;

/// mimalloc instead of glibc malloc: under load the broker allocates small, short-lived
/// buffers on every request and glibc's arenas showed up as ~15% of its CPU.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "homeroom",
    version,
    about = "Single sign-on broker for schools"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve with a configuration file.
    Serve {
        #[arg(long, short, default_value = "config/homeroom.toml")]
        config: PathBuf,
        /// Address to listen on (default 127.0.0.1:8080).
        #[arg(long, env = "HOMEROOM_LISTEN")]
        listen: Option<String>,
        /// Public base URL / issuer (default http://<listen>).
        #[arg(long, env = "HOMEROOM_PUBLIC_URL")]
        public_url: Option<String>,
    },
    /// Run the demo: sandbox Demo District IdP, demo app at /demo/app; no credentials.
    Demo {
        #[arg(long, env = "HOMEROOM_LISTEN")]
        listen: Option<String>,
        #[arg(long, env = "HOMEROOM_PUBLIC_URL")]
        public_url: Option<String>,
        /// Where the demo keeps its SQLite file and keys.
        #[arg(long, default_value = "./data")]
        data_dir: PathBuf,
    },
    /// Validate a configuration file and print every problem with its key path.
    CheckConfig { file: PathBuf },
    /// Print the trace of one login attempt by its reference id.
    /// Why can't someone sign in? QUERY is a reference id (HR-...) for the trace of one
    /// attempt, or an email, username or 3+ letters of a name for a person's checklist.
    Troubleshoot {
        #[arg(value_name = "QUERY")]
        reference: String,
        /// Tenant to search for a person (default: every tenant).
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Directory URL (default: from the config, else sqlite://./data/homeroom.db).
        #[arg(long)]
        directory: Option<String>,
    },
    /// Signing-key management.
    Keys {
        #[command(subcommand)]
        cmd: KeysCmd,
    },
    /// Import a OneRoster 1.1/1.2 CSV package (zip or folder) into a tenant's roster.
    /// Exits 1, writing nothing, when the package fails validation.
    ImportRoster {
        /// A .zip file, or a folder holding manifest.csv.
        path: PathBuf,
        #[arg(long)]
        tenant: String,
        /// Validate and show what would change; write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Link a new roster person to the one existing unrostered account with their email.
        #[arg(long)]
        adopt_existing: bool,
        /// Map an extension role, e.g. `--map-role ext:coach=staff` (repeatable).
        #[arg(long = "map-role", value_name = "EXT=ROLE")]
        map_role: Vec<String>,
        /// Print the full report as JSON on stdout.
        #[arg(long)]
        json: bool,
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Directory URL (default: from the config, else sqlite://./data/homeroom.db).
        #[arg(long)]
        directory: Option<String>,
    },
    /// Serve a sandbox upstream OIDC IdP (generic flavour) with N synthetic students
    /// `student{i}@{domain}`, as its own process (the surge benchmark's upstream).
    /// A matching `login_hint` signs in at once (silent sign-in).
    Sandbox {
        #[arg(long, default_value = "127.0.0.1:9400")]
        listen: String,
        /// Issuer URL (default http://<listen>).
        #[arg(long)]
        issuer: Option<String>,
        #[arg(long, default_value = "homeroom")]
        client_id: String,
        #[arg(long)]
        client_secret: String,
        /// Homeroom's callback, e.g. http://127.0.0.1:8080/callback/sandbox (repeatable).
        #[arg(long, required = true)]
        redirect_uri: Vec<String>,
        #[arg(long, default_value_t = 1000)]
        users: usize,
        #[arg(long, default_value = "surge.homeroom.test")]
        domain: String,
    },
}

#[derive(Subcommand)]
enum KeysCmd {
    /// Rotate: next becomes current, current becomes previous, previous retires.
    Rotate {
        #[arg(long, short)]
        config: Option<PathBuf>,
        #[arg(long)]
        directory: Option<String>,
    },
}

/// Logs go to stderr through a writer thread: a request never waits on a `write` to the
/// terminal or log file (every audit event is also a log line; on the login path those
/// synchronous writes were ~3% of Homeroom's CPU). Nothing is dropped: when the queue is full
/// the request waits, as before. Keep the guard until exit; dropping it flushes.
fn init_logs(json: bool) -> tracing_appender::non_blocking::WorkerGuard {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,sqlx=warn".into());
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .thread_name("homeroom-logs")
        .finish(std::io::stderr());
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    if json {
        b.json().init();
    } else {
        b.init();
    }
    guard
}

async fn open_directory(
    config: Option<PathBuf>,
    directory: Option<String>,
) -> Result<homeroom_directory::Directory> {
    let url = match (directory, config) {
        (Some(u), _) => u,
        (None, Some(path)) => {
            let cfg = config::load(&path).map_err(|p| {
                anyhow::anyhow!(
                    "{}",
                    p.iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("\n")
                )
            })?;
            homeroom::directory_url(&cfg)
        }
        (None, None) => "sqlite://./data/homeroom.db".into(),
    };
    homeroom_directory::Directory::connect(&url)
        .await
        .with_context(|| "cannot open the directory")
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Serve {
            config: path,
            listen,
            public_url,
        } => {
            let cfg = config::load(&path).map_err(|p| {
                anyhow::anyhow!(
                    "{}",
                    p.iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("\n")
                )
            })?;
            let _logs = init_logs(cfg.server.log_format.as_deref() == Some("json"));
            let running = homeroom::start(homeroom::ServeOptions {
                config: cfg,
                listen,
                public_url,
                demo: false,
                clock: None,
            })
            .await?;
            running.wait().await;
        }
        Cmd::Demo {
            listen,
            public_url,
            data_dir,
        } => {
            let _logs = init_logs(false);
            let mut cfg = config::Config::default();
            cfg.server.data_dir = Some(data_dir.display().to_string());
            let running = homeroom::start(homeroom::ServeOptions {
                config: cfg,
                listen,
                public_url,
                demo: true,
                clock: None,
            })
            .await?;
            eprintln!(
                "\nHomeroom demo is running.\n  Open {i}/demo/app to sign in as a Demo District student.\n  School portals (click a tile): {i}/sandbox/clever/portal  {i}/sandbox/classlink/launchpad  {i}/sandbox/gg4l/passport  {i}/sandbox/saml/portal\n  OIDC discovery: {i}/.well-known/openid-configuration\n  Clients: demo-public (PKCE) and demo-app / demo-secret, redirect URI http://127.0.0.1:8081/cb\n  Why did a sign-in fail? homeroom troubleshoot <reference shown on the page>\n",
                i = running.issuer
            );
            running.wait().await;
        }
        Cmd::CheckConfig { file } => {
            let problems = match config::load(&file) {
                Ok(cfg) => config::validate(&cfg),
                Err(p) => p,
            };
            if problems.is_empty() {
                println!("{}: OK", file.display());
            } else {
                for p in &problems {
                    println!("{p}");
                }
                eprintln!("{} problem(s) in {}", problems.len(), file.display());
                std::process::exit(1);
            }
        }
        Cmd::Troubleshoot {
            reference,
            tenant,
            config,
            directory,
        } if !reference.starts_with("HR-") => {
            let dir = open_directory(config, directory).await?;
            let tenants = match tenant {
                Some(t) => vec![homeroom_core::TenantId::new(t)],
                None => dir
                    .list_tenants()
                    .await?
                    .into_iter()
                    .map(|t| t.id)
                    .collect(),
            };
            let mut found = 0;
            for t in tenants {
                for account in homeroom_broker::troubleshoot::find(&dir, &t, &reference)
                    .await
                    .unwrap_or_default()
                    .iter()
                    .take(5)
                {
                    found += 1;
                    let report =
                        homeroom_broker::troubleshoot::account_report(&dir, account, 0).await?;
                    print!("{}", homeroom_broker::troubleshoot::format_report(&report));
                }
            }
            if found == 0 {
                println!(
                    "No account matches {:?}. Check the spelling, or search the events for the person's email.",
                    reference.chars().take(100).collect::<String>()
                );
                std::process::exit(1);
            }
        }
        Cmd::Troubleshoot {
            reference,
            config,
            directory,
            ..
        } => {
            let dir = open_directory(config, directory).await?;
            let events = dir
                .audit_for_ref(&homeroom_core::RefId::new(reference.clone()))
                .await?;
            print!(
                "{}",
                homeroom_broker::audit::format_trace(&reference, &events)
            );
            if events.is_empty() {
                std::process::exit(1);
            }
        }
        Cmd::Keys {
            cmd: KeysCmd::Rotate { config, directory },
        } => {
            let dir = open_directory(config, directory).await?;
            let now = time_now();
            let ks = homeroom_broker::keys::KeySet::rotate(&dir, now).await?;
            println!(
                "rotated; JWKS now publishes {} key(s)",
                ks.jwks()["keys"].as_array().map(Vec::len).unwrap_or(0)
            );
        }
        Cmd::ImportRoster {
            path,
            tenant,
            dry_run,
            adopt_existing,
            map_role,
            json,
            config,
            directory,
        } => {
            let dir = open_directory(config, directory).await?;
            let mut opts = homeroom_roster::ImportOptions {
                dry_run,
                adopt_existing,
                ..Default::default()
            };
            for m in &map_role {
                let (ext, role) = m
                    .split_once('=')
                    .with_context(|| format!("--map-role {m}: expected EXT=ROLE"))?;
                let role = role
                    .parse()
                    .map_err(|_| anyhow::anyhow!("--map-role {m}: unknown role {role}"))?;
                opts.ext_roles.insert(ext.to_owned(), role);
            }
            if !import_roster(&dir, &tenant, &path, &opts, json).await? {
                std::process::exit(1);
            }
        }
        Cmd::Sandbox {
            listen,
            issuer,
            client_id,
            client_secret,
            redirect_uri,
            users,
            domain,
        } => {
            let _logs = init_logs(false);
            run_sandbox(
                listen,
                issuer,
                homeroom_sandbox::SandboxClient {
                    client_id,
                    client_secret,
                    redirect_uris: redirect_uri,
                },
                users,
                domain,
            )
            .await?;
        }
    }
    Ok(())
}

/// Serves a generic-flavour sandbox IdP with `users` students until killed.
async fn run_sandbox(
    listen: String,
    issuer: Option<String>,
    client: homeroom_sandbox::SandboxClient,
    users: usize,
    domain: String,
) -> Result<()> {
    use homeroom_sandbox::{Flavour, OidcIdp, OidcIdpConfig, SandboxKeys, SandboxUser};
    let people: Vec<SandboxUser> = (0..users)
        .map(|i| {
            SandboxUser::new(
                &format!("student{i}"),
                "Student",
                &format!("Number{i}"),
                &format!("student{i}@{domain}"),
                "student",
            )
        })
        .collect();
    let keys = tokio::task::spawn_blocking(SandboxKeys::generate)
        .await?
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let addr = listener.local_addr()?;
    let mut config = OidcIdpConfig::new(Flavour::Generic, vec![client], people, keys);
    config.issuer = issuer
        .unwrap_or_else(|| format!("http://{addr}"))
        .trim_end_matches('/')
        .to_owned();
    let idp = OidcIdp::new(config);
    tracing::info!(%addr, issuer = %idp.issuer(), users, "sandbox IdP listening");
    axum::serve(listener, idp.router()).await?;
    Ok(())
}

fn time_now() -> i64 {
    use homeroom_core::Clock;
    homeroom_core::SystemClock.now()
}

/// Runs a roster import with progress on stderr and the report on stdout; `false` when
/// the import failed (nothing written).
async fn import_roster(
    dir: &homeroom_directory::Directory,
    tenant: &str,
    path: &std::path::Path,
    opts: &homeroom_roster::ImportOptions,
    json: bool,
) -> Result<bool> {
    use homeroom_roster::Progress;
    use std::io::Write;
    let mut current: Option<String> = None;
    let mut progress = |p: Progress<'_>| {
        let mut err = std::io::stderr().lock();
        let line = match p {
            Progress::Reading => format!("reading {}", path.display()),
            Progress::Rows { file, rows } => {
                let same = current.as_deref() == Some(file);
                current = Some(file.to_owned());
                let _ = write!(
                    err,
                    "{}  {file}: {rows} rows",
                    if same { "\r" } else { "\n" }
                );
                return;
            }
            Progress::Planning => "checking references and conflicts".into(),
            Progress::Applying { writes } => {
                format!("applying {writes} changes in one transaction")
            }
            Progress::Done => "done".into(),
        };
        current = None;
        let _ = write!(err, "\n{line}");
    };
    let report = homeroom_roster::import_path(
        dir,
        &homeroom_core::TenantId::new(tenant),
        path,
        opts,
        &mut progress,
    )
    .await?;
    eprintln!();
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.render_text());
    }
    let s = report.summary();
    eprintln!(
        "summary: {} added, {} updated, {} deactivated, {} conflicts{}",
        s.added,
        s.updated,
        s.deactivated,
        s.conflicts,
        if report.succeeded() {
            ""
        } else {
            " (FAILED: nothing written)"
        }
    );
    Ok(report.succeeded())
}
