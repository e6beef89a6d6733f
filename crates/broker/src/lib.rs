//! The Homeroom broker: the axum application. It owns the login pages, the one login
//! pipeline every way in goes through, the OpenID-provider endpoints apps talk to, and the
//! cross-cutting layers (security headers, reference ids). It holds no provider-specific
//! logic (that is `providers`), no storage code (`session`, `directory`) and no CLI or
//! config-file parsing (`homeroom`).
//!
//! Build the router with [`app`]; tests drive it with `tower::ServiceExt::oneshot`.

pub mod admin;
pub mod admin_accounts;
pub mod admin_classroom;
pub mod admin_ops;
pub mod audit;
pub mod badges;
pub mod cache;
pub mod classroom;
pub mod connection;
pub mod console;
pub mod cookies;
pub mod family;
pub mod family_admin;
pub mod flows;
pub mod guards;
pub mod keys;
pub mod limits;
pub mod local;
pub mod mail;
pub mod metrics;
pub mod middleware;
pub mod oauth;
pub mod pages;
pub mod pipeline;
pub mod policy;
pub mod registry;
pub mod respond;
pub mod saml;
pub mod tokens;
pub mod troubleshoot;

use axum::Router;
use homeroom_core::Clock;
use homeroom_directory::{AuditWriter, Directory};
use homeroom_session::SessionStore;
use std::sync::{Arc, RwLock};

pub use registry::ProviderRegistry;

/// Broker-wide settings (from the `[server]` config section).
#[derive(Debug, Clone)]
pub struct Settings {
    /// The issuer and public base URL, without a trailing slash (`http://127.0.0.1:8080`).
    pub issuer: String,
    /// Whether cookies are `Secure` (and the session cookie `__Host-` prefixed): true when
    /// the public URL is https.
    pub secure_cookies: bool,
    /// Lifetime of a pending login (authorize request + upstream hop), seconds.
    pub flow_ttl: i64,
    /// Authorization-code lifetime, seconds (60).
    pub code_ttl: i64,
    /// Access-token lifetime, seconds.
    pub access_token_ttl: i64,
    /// ID-token lifetime, seconds.
    pub id_token_ttl: i64,
    /// Refresh-token (family) lifetime, seconds.
    pub refresh_ttl: i64,
    /// A browser sent to sign in for the same app (or provider) more than this many times
    /// within `loop_window_secs` is stopped with an explanation (default 5 in 60 s).
    pub loop_max: u64,
    pub loop_window_secs: u64,
    /// Upstream timeouts/failures within `circuit_open_secs` that open a provider's circuit.
    pub circuit_threshold: u64,
    pub circuit_open_secs: u64,
    /// Trust the first `X-Forwarded-For` address (only behind a proxy that sets it).
    pub trust_forwarded_for: bool,
    /// Rate limits and challenges.
    pub limits: limits::LimitSettings,
    /// Tenants whose SSO sign-ins must map to an active rostered account.
    pub roster_required: std::collections::HashSet<homeroom_core::TenantId>,
    /// Apps assigned to some roles, schools or grades only.
    pub assignments: std::collections::HashMap<homeroom_core::ClientId, policy::Assignment>,
    /// Local passwords: hashing pool, lockout defaults, link lifetimes.
    pub local: local::LocalSettings,
    /// Outgoing mail server (`smtp://host:port`, `smtps://user:pass@host`,
    /// `smtp://host?tls=required`); `None`: mail is written to the outbox and never sent.
    pub smtp_url: Option<String>,
    /// The From address of outgoing mail.
    pub mail_from: String,
    /// Classroom sign-in codes: tenants that allow them and the code-encryption key.
    pub classroom: classroom::ClassroomSettings,
    /// Families: required policies per tenant, parent access codes.
    pub family: family::FamilySettings,
}

impl Settings {
    pub fn new(issuer: &str) -> Self {
        let issuer = issuer.trim_end_matches('/').to_owned();
        Self {
            secure_cookies: issuer.starts_with("https://"),
            issuer,
            flow_ttl: 600,
            code_ttl: 60,
            access_token_ttl: 900,
            id_token_ttl: 3600,
            refresh_ttl: 30 * 24 * 3600,
            loop_max: 5,
            loop_window_secs: 60,
            circuit_threshold: 5,
            circuit_open_secs: 30,
            trust_forwarded_for: false,
            limits: limits::LimitSettings::default(),
            roster_required: Default::default(),
            assignments: Default::default(),
            local: local::LocalSettings::default(),
            smtp_url: None,
            mail_from: "Homeroom <no-reply@homeroom.invalid>".into(),
            classroom: classroom::ClassroomSettings::default(),
            family: family::FamilySettings::default(),
        }
    }

    /// Absolute URL of a path on this Homeroom.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.issuer, path)
    }
}

/// Everything a handler needs, behind one `Arc`: axum clones the state for every layer and
/// every handler call, so a clone is one reference count (not one per handle inside; that
/// cost ~15% of a cached JWKS request).
#[derive(Clone)]
pub struct AppState(Arc<StateParts>);

impl std::ops::Deref for AppState {
    type Target = StateParts;
    fn deref(&self) -> &StateParts {
        &self.0
    }
}

/// What [`AppState`] holds (reached through `Deref`: `state.settings`, `state.directory`).
pub struct StateParts {
    pub settings: Arc<Settings>,
    pub directory: Directory,
    pub sessions: SessionStore,
    /// Batched audit writer; its task is owned by the last handle.
    pub audit: AuditWriter,
    pub providers: ProviderRegistry,
    /// Replaced whole on rotation; readers clone the Arc.
    pub keys: Arc<RwLock<Arc<keys::KeySet>>>,
    pub clock: Arc<dyn Clock>,
    /// The key challenges and passes are signed with, fetched once from the session store
    /// (where the first instance to need it created it).
    pub limit_secret: Arc<std::sync::OnceLock<Vec<u8>>>,
    /// The bounded argon2 pool (sized from `settings.local`); every password check and
    /// new password of this instance goes through it.
    pub hasher: Arc<local::HashPool>,
    /// Outbound HTTP (provider reloads, "test connection"), with timeouts and size caps.
    pub http: homeroom_providers::http::HttpClient,
    /// Verified tokens and apps (see `cache`).
    pub caches: Arc<cache::Caches>,
}

impl AppState {
    pub fn new(
        settings: Settings,
        directory: Directory,
        sessions: SessionStore,
        audit: AuditWriter,
        providers: ProviderRegistry,
        keys: keys::KeySet,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let hasher = Arc::new(local::HashPool::new(&settings.local));
        Self(Arc::new(StateParts {
            settings: Arc::new(settings),
            directory,
            sessions,
            audit,
            providers,
            keys: Arc::new(RwLock::new(Arc::new(keys))),
            clock,
            limit_secret: Arc::default(),
            hasher,
            caches: Arc::default(),
            http: homeroom_providers::http::HttpClient::with_defaults()
                .unwrap_or_else(|_| homeroom_providers::http::HttpClient::fallback()),
        }))
    }

    /// The key set in force.
    pub fn keyset(&self) -> Arc<keys::KeySet> {
        match self.keys.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn now(&self) -> i64 {
        self.clock.now()
    }

    /// An app by client id, through the 30-second cache.
    pub async fn app(
        &self,
        id: &homeroom_core::ClientId,
    ) -> Result<Option<Arc<homeroom_directory::AppRecord>>, homeroom_directory::DirectoryError>
    {
        let now = self.now();
        if let Some(hit) = self.caches.app(id, now) {
            return Ok(hit);
        }
        let app = self.directory.get_app(id).await?.map(Arc::new);
        self.caches.remember_app(id, app.clone(), now);
        Ok(app)
    }

    /// A tenant by id, through the 30-second cache.
    pub async fn tenant(
        &self,
        id: &homeroom_core::TenantId,
    ) -> Result<Option<homeroom_directory::Tenant>, homeroom_directory::DirectoryError> {
        let now = self.now();
        if let Some(hit) = self.caches.tenant(id, now) {
            return Ok(hit);
        }
        let t = self.directory.get_tenant(id).await?;
        self.caches.remember_tenant(id, t.clone(), now);
        Ok(t)
    }

    /// The tenant owning an email domain (case-insensitive), through the 30-second cache.
    pub async fn tenant_by_domain(
        &self,
        domain: &str,
    ) -> Result<Option<homeroom_directory::Tenant>, homeroom_directory::DirectoryError> {
        let now = self.now();
        let domain = domain.trim().to_ascii_lowercase();
        if let Some(hit) = self.caches.tenant_by_domain(&domain, now) {
            return Ok(hit);
        }
        let t = self.directory.tenant_by_domain(&domain).await?;
        self.caches.remember_domain(&domain, t.clone(), now);
        Ok(t)
    }

    /// Reloads signing keys from the directory (rotation done elsewhere: the CLI or another
    /// instance). Keeps the current set when the directory is unreachable or the stored keys
    /// are unusable.
    pub async fn reload_keys(&self) -> Result<(), keys::KeyError> {
        let records = self
            .directory
            .list_signing_keys()
            .await
            .map_err(|e| keys::KeyError::Directory(e.to_string()))?;
        let set = Arc::new(keys::KeySet::from_records(&records)?);
        match self.keys.write() {
            Ok(mut g) => *g = set,
            Err(poisoned) => *poisoned.into_inner() = set,
        }
        Ok(())
    }
}

/// The whole application router.
pub fn app(state: AppState) -> Router {
    metrics::install();
    Router::new()
        .route("/metrics", axum::routing::get(metrics::render))
        .route("/challenge", axum::routing::post(limits::verify))
        .merge(oauth::routes())
        .merge(admin::routes())
        .merge(admin_accounts::routes())
        .merge(console::routes())
        .merge(pipeline::routes())
        .merge(saml::routes())
        .merge(local::routes())
        .merge(classroom::routes())
        .merge(family::routes())
        .merge(family_admin::routes())
        .merge(pages::routes())
        .route_layer(axum::middleware::from_fn(metrics::track))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            limits::browser_limits,
        ))
        .layer(axum::middleware::from_fn(middleware::security_headers))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::client_ip,
        ))
        .with_state(state)
}
