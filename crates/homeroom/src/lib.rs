//! The `homeroom` binary's library half: loads configuration, opens the stores, imports
//! the config into the directory, builds the broker and serves it. `main.rs` only parses
//! the command line; tests call [`start`] to run a real server on `127.0.0.1:0`.

pub mod config;
pub mod demo;

use anyhow::{Context, Result};
use homeroom_broker::{AppState, ProviderRegistry, Settings, keys::KeySet};
use homeroom_core::{Clock, SystemClock};
use homeroom_directory::{AuditWriter, Directory};
use homeroom_providers::http::HttpClient;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::oneshot;

/// How to run a server.
pub struct ServeOptions {
    pub config: config::Config,
    /// Overrides `server.listen`.
    pub listen: Option<String>,
    /// Overrides `server.public_url`.
    pub public_url: Option<String>,
    /// Mount the demo sandbox IdP and demo app (and their config).
    pub demo: bool,
    /// Clock override for tests.
    pub clock: Option<Arc<dyn Clock>>,
}

/// A running server. Dropping it does not stop it; call [`Running::shutdown`].
pub struct Running {
    pub addr: SocketAddr,
    pub issuer: String,
    pub state: AppState,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Stops accepting, drains in-flight requests, flushes the audit log.
    pub async fn shutdown(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = self.task.await;
        self.state.audit.flush().await;
    }

    /// Waits until the server stops (Ctrl-C / SIGTERM when started by `main`).
    pub async fn wait(self) {
        let _ = self.task.await;
        self.state.audit.flush().await;
    }
}

/// Copies `[limits]`, `server.trust_forwarded_for` and the tenants' trusted networks into
/// the broker's settings.
pub fn apply_limits(cfg: &config::Config, s: &mut Settings) {
    use homeroom_broker::limits::Rate;
    let l = &cfg.limits;
    let lim = &mut s.limits;
    lim.enabled = l.enabled;
    let set = |r: &mut Rate, v: Option<u64>| {
        if let Some(per_minute) = v {
            *r = Rate::new(per_minute, (per_minute / 2).max(1));
        }
    };
    set(&mut lim.ip_soft, l.ip_soft_per_minute);
    set(&mut lim.ip_hard, l.ip_hard_per_minute);
    set(&mut lim.net_soft, l.network_soft_per_minute);
    set(&mut lim.net_hard, l.network_hard_per_minute);
    set(&mut lim.trusted_soft, l.trusted_soft_per_minute);
    set(&mut lim.trusted_hard, l.trusted_hard_per_minute);
    set(&mut lim.client, l.client_per_minute);
    set(&mut lim.tenant, l.tenant_per_minute);
    if let Some(b) = l.challenge_bits {
        lim.challenge_bits = b.clamp(1, 28);
    }
    for (id, t) in &cfg.tenants {
        let tenant = homeroom_core::TenantId::new(id.clone());
        let badges = &mut s.classroom.badges;
        for n in &t.trusted_networks {
            let net = match n.parse::<ipnet::IpNet>() {
                Ok(net) => net,
                Err(_) => match n.parse::<std::net::IpAddr>() {
                    Ok(ip) => ipnet::IpNet::from(ip),
                    Err(_) => continue,
                },
            };
            lim.trusted_networks.push(net);
            // QR badges work from the tenant's own school networks only.
            badges.trusted.entry(tenant.clone()).or_default().push(net);
        }
        if t.classroom_badges_anywhere {
            badges.anywhere.insert(tenant);
        }
    }
    s.trust_forwarded_for = cfg.server.trust_forwarded_for;
    for (id, t) in &cfg.tenants {
        if t.roster_required {
            s.roster_required
                .insert(homeroom_core::TenantId::new(id.clone()));
        }
        if t.classroom_codes {
            s.classroom
                .tenants
                .insert(homeroom_core::TenantId::new(id.clone()));
        }
        let tid = homeroom_core::TenantId::new(id.clone());
        if !t.family_policies.is_empty() {
            s.family.policies.insert(
                tid.clone(),
                t.family_policies
                    .iter()
                    .map(|p| homeroom_broker::family::RequiredPolicy {
                        name: p.name.clone(),
                        version: p.version.clone(),
                        url: p.url.clone(),
                    })
                    .collect(),
            );
        }
        if let Some(days) = t.parent_code_days {
            s.family.parent_code_ttl_days_by_tenant.insert(tid, days);
        }
    }
    for (id, a) in &cfg.apps {
        if !(a.assign_roles.is_empty() && a.assign_schools.is_empty() && a.assign_grades.is_empty())
        {
            s.assignments.insert(
                homeroom_core::ClientId::new(id.clone()),
                homeroom_broker::policy::Assignment {
                    roles: a
                        .assign_roles
                        .iter()
                        .filter_map(|r| r.parse().ok())
                        .collect(),
                    schools: a.assign_schools.clone(),
                    grades: a.assign_grades.clone(),
                },
            );
        }
    }
}

pub fn data_dir(cfg: &config::Config) -> PathBuf {
    PathBuf::from(
        cfg.server
            .data_dir
            .clone()
            .unwrap_or_else(|| "./data".into()),
    )
}

/// The directory URL a config names (default: SQLite file in the data dir).
pub fn directory_url(cfg: &config::Config) -> String {
    cfg.store
        .directory
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}/homeroom.db", data_dir(cfg).display()))
}

/// Binds, wires and starts serving.
pub async fn start(mut opts: ServeOptions) -> Result<Running> {
    let listen = opts
        .listen
        .clone()
        .or_else(|| opts.config.server.listen.clone())
        .unwrap_or_else(|| "127.0.0.1:8080".into());
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let addr = listener.local_addr()?;
    let issuer = opts
        .public_url
        .clone()
        .or_else(|| opts.config.server.public_url.clone())
        .unwrap_or_else(|| format!("http://{addr}"))
        .trim_end_matches('/')
        .to_owned();
    let clock: Arc<dyn Clock> = opts.clock.clone().unwrap_or_else(|| Arc::new(SystemClock));

    let demo = if opts.demo {
        let d = demo::Demo::prepare(&issuer, &data_dir(&opts.config)).await?;
        d.add_to_config(&mut opts.config);
        Some(d)
    } else {
        None
    };
    let problems = config::validate(&opts.config);
    if !problems.is_empty() {
        let list: Vec<String> = problems.iter().map(ToString::to_string).collect();
        anyhow::bail!("configuration has problems:\n  {}", list.join("\n  "));
    }
    let dir_url = directory_url(&opts.config);
    if let Some(path) = dir_url.strip_prefix("sqlite://")
        && let Some(parent) = std::path::Path::new(path).parent()
    {
        std::fs::create_dir_all(parent).ok();
    }
    let directory = Directory::connect(&dir_url)
        .await
        .context("cannot open the directory")?;
    config::import(&opts.config, &directory)
        .await
        .context("cannot import the configuration")?;
    let sessions_url = opts
        .config
        .store
        .sessions
        .clone()
        .unwrap_or_else(|| "memory://".into());
    let sessions = homeroom_session::open(&sessions_url)
        .await
        .context("cannot open the session store")?;
    let audit = AuditWriter::spawn(directory.clone());
    let http = HttpClient::with_defaults().context("cannot build the HTTP client")?;
    let (providers, failures) = ProviderRegistry::load(&directory, &http, clock.clone()).await?;
    for f in failures {
        for p in f.problems {
            tracing::error!(provider = %f.provider, path = %p.path, reason = %p.reason, "provider not started");
        }
    }
    let keys = KeySet::load_or_generate(&directory, clock.now())
        .await
        .context("cannot load signing keys")?;
    let mut settings = Settings::new(&issuer);
    apply_limits(&opts.config, &mut settings);
    settings.smtp_url = opts.config.server.smtp_url.clone();
    if let Some(k) = &opts.config.server.classroom_code_key {
        settings.classroom.key = Some(
            homeroom_broker::classroom::CodeKey::parse(k)
                .context("server.classroom_code_key must be 32 bytes: 64 hex digits or base64")?,
        );
    }
    if let Some(from) = &opts.config.server.mail_from {
        settings.mail_from = from.clone();
    }
    let state = AppState::new(settings, directory, sessions, audit, providers, keys, clock);
    // Sends the outbox when SMTP is configured; owned by the server task below.
    let mail_delivery = homeroom_broker::mail::spawn_delivery(state.clone());
    let mut router = homeroom_broker::app(state.clone());
    if let Some(d) = demo {
        router = router.merge(d.routes(&issuer));
    }
    // Keys rotate elsewhere (CLI, another instance): pick them up every minute. The task is
    // owned by the server task below and ends with it.
    let key_state = state.clone();
    let key_reloader = tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
        tick.tick().await;
        loop {
            tick.tick().await;
            if let Err(e) = key_state.reload_keys().await {
                tracing::warn!(error = %e, "signing keys not reloaded");
            }
        }
    });
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let shutdown = async move {
            tokio::select! {
                _ = stop_rx => {}
                _ = shutdown_signal() => {}
            }
        };
        let served = axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown)
        .await;
        key_reloader.abort();
        if let Some(d) = mail_delivery {
            d.stop().await;
        }
        if let Err(e) = served {
            tracing::error!(error = %e, "server stopped with an error");
        }
    });
    tracing::info!(%addr, %issuer, "homeroom listening");
    Ok(Running {
        addr,
        issuer,
        state,
        stop: Some(stop_tx),
        task,
    })
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
