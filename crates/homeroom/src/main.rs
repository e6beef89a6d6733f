//! `homeroom`: the command line. Parses arguments and hands over to the library.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use homeroom::config;
use std::path::PathBuf;

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
    Troubleshoot {
        reference: String,
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

fn init_logs(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,sqlx=warn".into());
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        b.json().init();
    } else {
        b.init();
    }
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
            init_logs(cfg.server.log_format.as_deref() == Some("json"));
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
            init_logs(false);
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
                "\nHomeroom demo is running.\n  Open {}/demo/app to sign in as a Demo District student.\n  OIDC discovery: {}/.well-known/openid-configuration\n  Clients: demo-public (PKCE) and demo-app / demo-secret, redirect URI http://127.0.0.1:8081/cb\n",
                running.issuer, running.issuer
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
            config,
            directory,
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
    }
    Ok(())
}

fn time_now() -> i64 {
    use homeroom_core::Clock;
    homeroom_core::SystemClock.now()
}
