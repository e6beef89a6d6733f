//! Ephemeral state: login flow state, SSO sessions, authorization codes, refresh-token
//! families, counters and replay caches. Everything lives behind one [`KvBackend`] trait
//! with an in-memory backend ([`memory::MemoryBackend`], one process) and a Redis backend
//! ([`redis_backend::RedisBackend`], several instances). [`SessionStore`] adds typed JSON
//! records on top.
//!
//! This crate never holds durable data (that is `directory`) and never decides policy: it
//! offers the atomic primitives (single-use `take`, `put_if_absent`, `incr`) that the
//! broker builds single-use codes, rotation and lockout counters from.
//!
//! Expiry: backends expire keys after their TTL (garbage collection). Records that must
//! expire exactly also carry their own `expires_at`, checked against the broker's clock,
//! so tests can move time without waiting for the backend.

mod coherent;
pub mod memory;
pub mod redis_backend;
mod store;

pub use store::SessionStore;

use async_trait::async_trait;

/// A failure of the store itself (unreachable, corrupt value). Not a "not found".
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend cannot be reached (connection refused, timeout, I/O error).
    #[error("session store unavailable: {0}")]
    Unavailable(String),
    /// A stored value has the wrong shape or kind (bad JSON, not a counter, not a set).
    #[error("stored value could not be decoded: {0}")]
    Corrupt(String),
    /// The URL names no supported backend.
    #[error("unsupported session store URL {0:?} (use memory:// or redis://host:port)")]
    BadUrl(String),
}

/// The primitive operations every backend provides. Keys are plain strings with a
/// namespace prefix chosen by the caller (`flow:`, `sso:`, `code:` ...). TTLs are seconds
/// and always > 0.
#[async_trait]
pub trait KvBackend: Send + Sync + std::fmt::Debug {
    /// Stores `value` under `key`, replacing any value, expiring after `ttl_secs`.
    async fn put(&self, key: &str, value: &[u8], ttl_secs: u64) -> Result<(), StoreError>;
    /// Stores only when `key` is absent; returns whether this call stored it. Atomic
    /// across instances (Redis `SET NX EX`).
    async fn put_if_absent(
        &self,
        key: &str,
        value: &[u8],
        ttl_secs: u64,
    ) -> Result<bool, StoreError>;
    /// The value under `key`, if present and unexpired.
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Reads and deletes in one atomic step (Redis `GETDEL`): of many concurrent callers,
    /// exactly one receives the value.
    async fn take(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Deletes; returns whether the key existed.
    async fn delete(&self, key: &str) -> Result<bool, StoreError>;
    /// Atomically adds `by` to an integer counter, creating it at 0 with `ttl_secs` when
    /// absent (the TTL is not extended by later increments). Returns the new value.
    async fn incr(&self, key: &str, by: i64, ttl_secs: u64) -> Result<i64, StoreError>;
    /// Adds a member to a set, (re)setting the set's TTL.
    async fn set_add(&self, key: &str, member: &str, ttl_secs: u64) -> Result<(), StoreError>;
    /// All members of a set (empty when absent).
    async fn set_members(&self, key: &str) -> Result<Vec<String>, StoreError>;
    /// Removes a member from a set; returns whether it was there.
    async fn set_remove(&self, key: &str, member: &str) -> Result<bool, StoreError>;
    /// Checks that the backend answers.
    async fn ping(&self) -> Result<(), StoreError>;
    /// Deletes `key` and announces the deletion to every instance's local read cache
    /// (Redis: `PUBLISH` and `DEL` in one script, then a `PING` round trip). Returns whether the key existed. Keys read
    /// with [`KvBackend::get_shared`] must be deleted this way.
    async fn delete_announced(&self, key: &str) -> Result<bool, StoreError> {
        self.delete(key).await
    }
    /// A value previously decoded from `key` by this process, when the backend keeps a local
    /// cache of write-once keys that is coherent with [`KvBackend::delete_announced`] (the
    /// Redis backend does, while its deletion feed is subscribed; see `coherent`). `None`
    /// means "read it from the store", never "absent".
    fn get_shared(&self, _key: &str) -> Option<SharedValue> {
        None
    }
    /// Taken before reading a write-once key from the store; hand it back to
    /// [`KvBackend::keep_shared`] with the decoded value.
    fn shared_stamp(&self) -> SharedStamp {
        SharedStamp(None)
    }
    /// Keeps a decoded write-once value for [`KvBackend::get_shared`], unless a deletion or a
    /// feed reconnection happened since `stamp` (then the value may be stale and is dropped).
    fn keep_shared(&self, _key: &str, _value: SharedValue, _stamp: SharedStamp) {}
    /// One step of the generic cell-rate algorithm on `key`, atomically: a request costs
    /// `interval_ms` of "theoretical arrival time"; up to `burst` requests may run ahead of
    /// the steady rate. Uses the backend's own clock (Redis `TIME`), so every instance
    /// shares one budget per key.
    async fn gcra(&self, key: &str, interval_ms: u64, burst: u64) -> Result<Gcra, StoreError>;
    /// [`KvBackend::gcra`] on each step in order, stopping at the first that is limited:
    /// `Some((index, retry_after_ms))` for it (the steps before it were charged, the ones
    /// after it were not), `None` when all were allowed. Redis does it in one round trip.
    async fn gcra_chain(&self, steps: &[GcraStep]) -> Result<Option<(usize, u64)>, StoreError> {
        for (i, s) in steps.iter().enumerate() {
            if let Gcra::Limited { retry_after_ms } =
                self.gcra(&s.key, s.interval_ms, s.burst).await?
            {
                return Ok(Some((i, retry_after_ms)));
            }
        }
        Ok(None)
    }
}

/// A decoded value held by a backend's local cache, shared between requests.
pub type SharedValue = std::sync::Arc<dyn std::any::Any + Send + Sync>;

/// See [`KvBackend::shared_stamp`]: the cache version when a read started.
#[derive(Debug, Clone, Copy)]
pub struct SharedStamp(pub(crate) Option<u64>);

/// One step of [`KvBackend::gcra_chain`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcraStep {
    pub key: String,
    pub interval_ms: u64,
    pub burst: u64,
}

/// Outcome of [`KvBackend::gcra`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gcra {
    Allowed,
    /// Over the limit; the next request would be allowed after this many milliseconds.
    Limited {
        retry_after_ms: u64,
    },
}

/// Opens a backend from a URL: `memory://` or `redis://host:port[/db]`.
pub async fn open(url: &str) -> Result<SessionStore, StoreError> {
    if url.starts_with("memory://") || url == "memory" {
        Ok(SessionStore::new(std::sync::Arc::new(
            memory::MemoryBackend::new(),
        )))
    } else if url.starts_with("redis://") || url.starts_with("rediss://") {
        let backend = redis_backend::RedisBackend::connect(url).await?;
        Ok(SessionStore::new(std::sync::Arc::new(backend)))
    } else {
        Err(StoreError::BadUrl(url.to_owned()))
    }
}
