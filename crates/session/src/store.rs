//! Typed JSON records over a [`KvBackend`].

use crate::{KvBackend, StoreError};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::sync::Arc;

/// The handle the broker holds. Cheap to clone; every clone shares one backend.
#[derive(Clone, Debug)]
pub struct SessionStore {
    backend: Arc<dyn KvBackend>,
}

impl SessionStore {
    /// Wraps a backend (see [`crate::open`] to build one from a URL).
    pub fn new(backend: Arc<dyn KvBackend>) -> Self {
        Self { backend }
    }

    /// The raw primitives, for counters and sets.
    pub fn backend(&self) -> &dyn KvBackend {
        self.backend.as_ref()
    }

    /// Stores `value` as JSON, replacing any value; a `ttl_secs` of 0 is raised to 1.
    pub async fn put_json<T: Serialize + Sync>(
        &self,
        key: &str,
        value: &T,
        ttl_secs: u64,
    ) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(value).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.backend.put(key, &bytes, ttl_secs.max(1)).await
    }

    /// Stores `value` as JSON only when `key` is absent; returns whether this call stored it.
    pub async fn put_json_if_absent<T: Serialize + Sync>(
        &self,
        key: &str,
        value: &T,
        ttl_secs: u64,
    ) -> Result<bool, StoreError> {
        let bytes = serde_json::to_vec(value).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.backend
            .put_if_absent(key, &bytes, ttl_secs.max(1))
            .await
    }

    /// Reads a JSON value; [`StoreError::Corrupt`] when the stored bytes do not decode as `T`.
    pub async fn get_json<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StoreError> {
        decode(self.backend.get(key).await?)
    }

    /// Atomic read-and-delete: the single-use primitive.
    pub async fn take_json<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StoreError> {
        decode(self.backend.take(key).await?)
    }

    /// Reads a JSON value that is written once and only ever deleted with
    /// [`SessionStore::delete_announced`] (a token family). Answered from the backend's
    /// local cache when it holds a coherent copy (Redis with its deletion feed up), else read
    /// and decoded, and kept for the next reader.
    pub async fn get_json_shared<T: DeserializeOwned + Send + Sync + 'static>(
        &self,
        key: &str,
    ) -> Result<Option<Arc<T>>, StoreError> {
        if let Some(hit) = self.backend.get_shared(key)
            && let Ok(value) = hit.downcast::<T>()
        {
            return Ok(Some(value));
        }
        let stamp = self.backend.shared_stamp();
        let Some(value) = decode::<T>(self.backend.get(key).await?)? else {
            return Ok(None);
        };
        let value = Arc::new(value);
        self.backend.keep_shared(key, value.clone(), stamp);
        Ok(Some(value))
    }

    /// Writes a write-once value (see [`SessionStore::get_json_shared`]) and keeps this
    /// instance's decoded copy, so the writer's next read needs no round trip. The copy
    /// is kept on the same terms as one read back: not if a deletion was announced, or the
    /// feed reconnected, between the start of this call and its end.
    pub async fn put_json_shared<T: Serialize + Send + Sync + 'static>(
        &self,
        key: &str,
        value: Arc<T>,
        ttl_secs: u64,
    ) -> Result<(), StoreError> {
        let stamp = self.backend.shared_stamp();
        self.put_json(key, value.as_ref(), ttl_secs).await?;
        self.backend.keep_shared(key, value, stamp);
        Ok(())
    }

    /// Deletes a key read with [`SessionStore::get_json_shared`], on every instance's cache
    /// too; returns whether it existed.
    pub async fn delete_announced(&self, key: &str) -> Result<bool, StoreError> {
        self.backend.delete_announced(key).await
    }

    /// Deletes `key`; returns whether it existed.
    pub async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        self.backend.delete(key).await
    }
}

fn decode<T: DeserializeOwned>(raw: Option<Vec<u8>>) -> Result<Option<T>, StoreError> {
    match raw {
        None => Ok(None),
        Some(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| StoreError::Corrupt(e.to_string())),
    }
}
