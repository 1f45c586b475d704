//! Where a server-side session's bytes live: in memory (moka) or in Redis. Backends store opaque, already sealed
//! bytes under a key that is a hash of the cookie's random id, so neither a memory dump nor a Redis `KEYS` reveals a
//! usable cookie, and crypto is written once, in [`super::Sessions`]. Each entry expires at its token's `exp`.

pub mod memory;
pub mod redis;

use crate::telemetry::span::Child;

/// The store key: SHA-256 of the cookie's random session id.
pub type Key = [u8; 32];

/// A store failed (Redis unreachable, …). The request gets a 503; nothing panics.
#[derive(Debug, Clone, thiserror::Error)]
#[error("session store unavailable: {0}")]
pub struct StoreError(pub String);

/// What a back-channel logout can name: the issuer's session id and the subject; and when the login was made (a
/// logout token issued before it does not end it).
#[derive(Debug, Clone, Default)]
pub struct Owner {
    pub sid: Option<String>,
    pub sub: String,
    pub created: i64,
}

/// What a back-channel logout did: sessions ended, and sessions of the same owner kept because they were made after
/// the logout token was issued.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ended {
    pub ended: usize,
    pub kept_newer: usize,
}

/// A held cross-replica lock. Only its holder (a random owner token) can renew or release it, so a holder whose
/// lease lapsed cannot release the lock someone else took since.
#[derive(Debug)]
pub struct Lease {
    name: String,
    owner: String,
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
        let span = self.span("put");
        let out = {
            let ttl = (expires_at - now).max(1) as u64;
            match self {
                Store::Memory(m) => {
                    m.put(*key, value, owner, ttl).await;
                    Ok(())
                }
                Store::Redis(r) => r.put(key, value, owner, ttl).await,
            }
        };
        ended(span, out)
    }

    /// Like [`Store::put`], but only over a session still stored: a refresh that finishes after the session was
    /// ended (sign-out, back-channel logout) must not bring it back. Returns whether it was written.
    pub async fn replace(
        &self,
        key: &Key,
        value: Vec<u8>,
        owner: &Owner,
        expires_at: i64,
        now: i64,
    ) -> Result<bool, StoreError> {
        let span = self.span("replace");
        let out = {
            let ttl = (expires_at - now).max(1) as u64;
            match self {
                Store::Memory(m) => Ok(m.replace(*key, value, owner, ttl).await),
                Store::Redis(r) => r.replace(key, value, owner, ttl).await,
            }
        };
        ended(span, out)
    }

    /// The bytes under `key`, if any (shared with the memory store, not copied).
    pub async fn get(&self, key: &Key) -> Result<Option<bytes::Bytes>, StoreError> {
        let span = self.span("get");
        let out = {
            match self {
                Store::Memory(m) => Ok(m.get(key).await),
                // Boxed: the Redis client's future is kilobytes, and would size every logged-in request's future
                // (the memory and cookie stores' included).
                Store::Redis(r) => Ok(Box::pin(r.get(key)).await?.map(bytes::Bytes::from)),
            }
        };
        ended(span, out)
    }

    /// Removes one session.
    pub async fn delete(&self, key: &Key) -> Result<(), StoreError> {
        let span = self.span("delete");
        let out = {
            match self {
                Store::Memory(m) => {
                    m.delete(key).await;
                    Ok(())
                }
                Store::Redis(r) => r.delete(key).await,
            }
        };
        ended(span, out)
    }

    /// Removes every session of the issuer session `sid`, or of `sub` when no `sid` is given, whose login was made
    /// at or before `issued_at` (a logout token's `iat`); later logins are kept.
    pub async fn delete_owned(
        &self,
        sid: Option<&str>,
        sub: Option<&str>,
        issued_at: i64,
    ) -> Result<Ended, StoreError> {
        let span = self.span("delete_owned");
        let out = {
            match self {
                Store::Memory(m) => Ok(m.delete_owned(sid, sub, issued_at).await),
                Store::Redis(r) => r.delete_owned(sid, sub, issued_at).await,
            }
        };
        ended(span, out)
    }

    /// Records `name` as used for `ttl_secs`; false when it already was — by any replica sharing the store (Redis).
    /// The memory store serves one process, whose own replay guard is enough: always true.
    pub async fn first_use(&self, name: &str, ttl_secs: u64) -> Result<bool, StoreError> {
        let span = self.span("first_use");
        let out = {
            match self {
                Store::Memory(_) => Ok(true),
                Store::Redis(r) => r.first_use(name, ttl_secs).await,
            }
        };
        ended(span, out)
    }

    /// Takes a cross-replica lock for `name` for `ttl_ms` (Redis) or always succeeds (memory: one process,
    /// in-process single flight is enough). Returns the lease when this caller holds it.
    pub async fn try_lock(&self, name: &str, ttl_ms: u64) -> Result<Option<Lease>, StoreError> {
        let span = self.span("try_lock");
        let out = {
            let owner = crate::random::token(16);
            let held = match self {
                Store::Memory(_) => true,
                Store::Redis(r) => r.try_lock(name, &owner, ttl_ms).await?,
            };
            Ok(held.then(|| Lease { name: name.to_owned(), owner }))
        };
        ended(span, out)
    }

    /// Extends a lease to `ttl_ms` from now, if it is still this holder's. Returns whether it was.
    pub async fn renew(&self, lease: &Lease, ttl_ms: u64) -> Result<bool, StoreError> {
        let span = self.span("renew");
        let out = {
            match self {
                Store::Memory(_) => Ok(true),
                Store::Redis(r) => r.renew(&lease.name, &lease.owner, ttl_ms).await,
            }
        };
        ended(span, out)
    }

    /// Releases a lease, if it is still this holder's (compare-and-delete). Returns whether it was.
    pub async fn unlock(&self, lease: &Lease) -> bool {
        let mut span = self.span("unlock");
        let unlocked = {
            match self {
                Store::Memory(_) => true,
                Store::Redis(r) => r.unlock(&lease.name, &lease.owner).await,
            }
        };
        if !unlocked {
            span.fail();
        }
        unlocked
    }

    /// Keeps `value` under `key` for `ttl_secs`, outside every session index: a form post kept over a re-login
    /// (`login::preserved_post`), already sealed.
    pub async fn put_blob(&self, key: &Key, value: Vec<u8>, ttl_secs: u64) -> Result<(), StoreError> {
        let span = self.span("put_blob");
        let out = {
            match self {
                Store::Memory(m) => {
                    m.put_blob(*key, value, ttl_secs).await;
                    Ok(())
                }
                Store::Redis(r) => r.put_blob(key, value, ttl_secs).await,
            }
        };
        ended(span, out)
    }

    /// Takes the value [`Store::put_blob`] kept under `key` out: of callers racing for it (replicas included), one
    /// gets it.
    pub async fn take_blob(&self, key: &Key) -> Result<Option<bytes::Bytes>, StoreError> {
        let span = self.span("take_blob");
        let out = {
            match self {
                Store::Memory(m) => Ok(m.take_blob(key).await),
                Store::Redis(r) => Ok(r.take_blob(key).await?.map(bytes::Bytes::from)),
            }
        };
        ended(span, out)
    }

    /// Whether the store answers (for `/readyz`).
    pub async fn ping(&self) -> Result<(), StoreError> {
        let span = self.span("ping");
        let out = {
            match self {
                Store::Memory(_) => Ok(()),
                Store::Redis(r) => r.ping().await,
            }
        };
        ended(span, out)
    }
}

impl Store {
    /// A child span of the request being traced, if any, for one store operation `op` (never the key or value).
    fn span(&self, op: &'static str) -> Child {
        let mut span = Child::start(match op {
            "put" => "session_store put",
            "replace" => "session_store replace",
            "get" => "session_store get",
            "delete" => "session_store delete",
            "delete_owned" => "session_store delete_owned",
            "first_use" => "session_store first_use",
            "try_lock" => "session_store try_lock",
            "renew" => "session_store renew",
            "unlock" => "session_store unlock",
            "put_blob" => "session_store put_blob",
            "take_blob" => "session_store take_blob",
            "ping" => "session_store ping",
            _ => "session_store",
        });
        span.set("db.operation.name", || op);
        span.set("db.system.name", || match self {
            Store::Memory(_) => "idgate.memory",
            Store::Redis(_) => "redis",
        });
        span
    }
}

/// Ends a store operation's span, marked failed on an error.
fn ended<T>(mut span: Child, out: Result<T, StoreError>) -> Result<T, StoreError> {
    if out.is_err() {
        span.fail();
    }
    out
}

/// Hex of a key, for Redis key names and logs.
pub fn hex(key: &Key) -> String {
    key.iter().map(|b| format!("{b:02x}")).collect()
}
