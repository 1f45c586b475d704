//! Where a server-side session's bytes live: in memory (moka) or in Redis. Backends store opaque, already sealed
//! bytes under a key that is a hash of the cookie's random id, so neither a memory dump nor a Redis `KEYS` reveals a
//! usable cookie, and crypto is written once, in [`super::Sessions`]. Each entry expires at its token's `exp`.

pub mod memory;
pub mod redis;

/// The store key: SHA-256 of the cookie's random session id.
pub type Key = [u8; 32];

/// A store failed (Redis unreachable, …). The request gets a 503; nothing panics.
#[derive(Debug, Clone, thiserror::Error)]
#[error("session store unavailable: {0}")]
pub struct StoreError(pub String);

/// What a back-channel logout can name: the issuer's session id and the subject.
#[derive(Debug, Clone, Default)]
pub struct Owner {
    pub sid: Option<String>,
    pub sub: String,
}

/// The server-side backends.
#[derive(Debug)]
pub enum Store {
    Memory(memory::MemoryStore),
    Redis(redis::RedisStore),
}

impl Store {
    /// Stores `value` until `expires_at` (seconds since the epoch; `now` is the request's time).
    pub async fn put(
        &self,
        key: &Key,
        value: Vec<u8>,
        owner: &Owner,
        expires_at: i64,
        now: i64,
    ) -> Result<(), StoreError> {
        let ttl = (expires_at - now).max(1) as u64;
        match self {
            Store::Memory(m) => {
                m.put(*key, value, owner, ttl).await;
                Ok(())
            }
            Store::Redis(r) => r.put(key, value, owner, ttl).await,
        }
    }

    /// The bytes under `key`, if any (shared with the memory store, not copied).
    pub async fn get(&self, key: &Key) -> Result<Option<bytes::Bytes>, StoreError> {
        match self {
            Store::Memory(m) => Ok(m.get(key).await),
            Store::Redis(r) => Ok(r.get(key).await?.map(bytes::Bytes::from)),
        }
    }

    /// Removes one session.
    pub async fn delete(&self, key: &Key) -> Result<(), StoreError> {
        match self {
            Store::Memory(m) => {
                m.delete(key).await;
                Ok(())
            }
            Store::Redis(r) => r.delete(key).await,
        }
    }

    /// Removes every session of the issuer session `sid`, or of `sub` when no `sid` is given. Returns how many.
    pub async fn delete_owned(&self, sid: Option<&str>, sub: Option<&str>) -> Result<usize, StoreError> {
        match self {
            Store::Memory(m) => Ok(m.delete_owned(sid, sub).await),
            Store::Redis(r) => r.delete_owned(sid, sub).await,
        }
    }

    /// Takes a cross-replica lock for `name` (Redis) or always succeeds (memory: one process, in-process single
    /// flight is enough). Returns whether this caller holds it.
    pub async fn try_lock(&self, name: &str, ttl_ms: u64) -> Result<bool, StoreError> {
        match self {
            Store::Memory(_) => Ok(true),
            Store::Redis(r) => r.try_lock(name, ttl_ms).await,
        }
    }

    /// Releases a lock taken with [`Store::try_lock`].
    pub async fn unlock(&self, name: &str) {
        if let Store::Redis(r) = self {
            r.unlock(name).await;
        }
    }

    /// Whether the store answers (for `/readyz`).
    pub async fn ping(&self) -> Result<(), StoreError> {
        match self {
            Store::Memory(_) => Ok(()),
            Store::Redis(r) => r.ping().await,
        }
    }
}

/// Hex of a key, for Redis key names and logs.
pub fn hex(key: &Key) -> String {
    key.iter().map(|b| format!("{b:02x}")).collect()
}
