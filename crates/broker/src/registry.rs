//! The providers in force: built once from the directory's provider records by
//! `homeroom_providers::build`, looked up by id. Rebuilt whole when the configuration
//! changes; readers clone an `Arc` and never wait on a rebuild.

use homeroom_core::{Clock, ProviderId, TenantId};
use homeroom_directory::{Directory, ProviderRecord};
use homeroom_providers::http::HttpClient;
use homeroom_providers::{ConfigProblem, DynProvider, ProviderSettings};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// One configured provider.
#[derive(Clone)]
pub struct Registered {
    pub provider: DynProvider,
    pub record: ProviderRecord,
}

impl Registered {
    pub fn tenant(&self) -> &TenantId {
        &self.record.tenant
    }
}

type Map = Arc<HashMap<ProviderId, Registered>>;

/// Shared handle; clones see the same map.
#[derive(Clone, Default)]
pub struct ProviderRegistry {
    inner: Arc<RwLock<Map>>,
}

/// A provider that could not be built, with its problems.
#[derive(Debug)]
pub struct BuildFailure {
    pub provider: ProviderId,
    pub problems: Vec<ConfigProblem>,
}

impl ProviderRegistry {
    /// Builds every provider record in the directory. Providers that fail to build are
    /// returned as failures and left out; the rest are served.
    pub async fn load(
        dir: &Directory,
        http: &HttpClient,
        clock: Arc<dyn Clock>,
    ) -> Result<(Self, Vec<BuildFailure>), homeroom_directory::DirectoryError> {
        let reg = Self::default();
        let failures = reg.reload(dir, http, clock).await?;
        Ok((reg, failures))
    }

    /// Rebuilds from the directory and swaps the map in.
    pub async fn reload(
        &self,
        dir: &Directory,
        http: &HttpClient,
        clock: Arc<dyn Clock>,
    ) -> Result<Vec<BuildFailure>, homeroom_directory::DirectoryError> {
        let records = dir.list_providers(None).await?;
        let mut tenants_domains: HashMap<TenantId, Vec<String>> = HashMap::new();
        for t in dir.list_tenants().await? {
            tenants_domains.insert(t.id.clone(), t.domains.clone());
        }
        let mut map = HashMap::new();
        let mut failures = Vec::new();
        for record in records {
            let settings = ProviderSettings {
                id: record.id.clone(),
                display_name: record.display_name.clone(),
                kind: record.kind.clone(),
                config: record.config.clone(),
                tenant_domains: tenants_domains
                    .get(&record.tenant)
                    .cloned()
                    .unwrap_or_default(),
            };
            match homeroom_providers::build(&settings, http, clock.clone()) {
                Ok(provider) => {
                    map.insert(record.id.clone(), Registered { provider, record });
                }
                Err(problems) => failures.push(BuildFailure {
                    provider: record.id.clone(),
                    problems,
                }),
            }
        }
        self.swap(map);
        Ok(failures)
    }

    /// Replaces the whole map (tests build providers by hand).
    pub fn swap(&self, map: HashMap<ProviderId, Registered>) {
        let new: Map = Arc::new(map);
        match self.inner.write() {
            Ok(mut g) => *g = new,
            Err(poisoned) => *poisoned.into_inner() = new,
        }
    }

    fn snapshot(&self) -> Map {
        match self.inner.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn get(&self, id: &ProviderId) -> Option<Registered> {
        self.snapshot().get(id).cloned()
    }

    /// Enabled providers of a tenant, sorted by display name.
    pub fn for_tenant(&self, tenant: &TenantId) -> Vec<Registered> {
        let mut v: Vec<Registered> = self
            .snapshot()
            .values()
            .filter(|r| &r.record.tenant == tenant && r.record.enabled)
            .cloned()
            .collect();
        v.sort_by(|a, b| a.record.display_name.cmp(&b.record.display_name));
        v
    }
}
