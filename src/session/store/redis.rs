//! The Redis store: `idgate:s:<key>` holds a session with an expiry at its token's `exp`; the sorted sets
//! `idgate:z:sid:<sid>` and `idgate:z:sub:<sub>` index keys for back-channel logout, scored by when the login was
//! made and living as long as the last session they name; `idgate:once:<name>` remembers used logout-token `jti`s
//! for every replica; `idgate:lock:<name>` makes refreshes single-flight across replicas, held under a random owner
//! token (renewed and released only by its owner, compare-and-delete in one script). The connection is made lazily and re-made after failures, so idgate
//! starts (not ready) while Redis is down and resumes when it returns.
//!
//! One code path for one server, Sentinel and Cluster ([`connect`]): every command and every pipeline names one
//! key, and each script one `KEYS[1]`, so nothing can fail with `CROSSSLOT` and no key needs a hash tag — a
//! session, its two indexes and its lock hash to different slots on purpose (they spread over the shards). Where
//! two writes used to share a `MULTI`, their order now keeps the invariant instead: the indexes are written before
//! a new session (a session never exists that back-channel logout cannot find), and ended sessions are deleted
//! before their index entries. The multi-key `DEL` and `EXISTS` are split per slot by the cluster client.

mod connect;

use std::time::Duration;

use redis::AsyncCommands;
use tokio::sync::Mutex;

use super::{Ended, Key, Owner, StoreError, hex};
use connect::{Conn, Connector};

const TIMEOUT: Duration = Duration::from_secs(2);
/// An index set outlives the last session it names by this long. It used to expire 36 h after its last write, so a
/// session living longer (a long ID token) escaped back-channel logout once its index was gone.
const INDEX_GRACE_SECS: u64 = 60;
/// Adds `ARGV[1]` scored `ARGV[2]` to the index and extends (never shortens) its life to `ARGV[3]` seconds.
const INDEX_AND_EXTEND: &str = "redis.call('zadd', KEYS[1], ARGV[2], ARGV[1]) \
     if redis.call('ttl', KEYS[1]) < tonumber(ARGV[3]) then redis.call('expire', KEYS[1], ARGV[3]) end \
     return redis.status_reply('OK')";
/// Extends a lock's lease only while it is still held by this owner.
const RENEW_IF_OWNER: &str =
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end";
/// Deletes a lock only while it is still held by this owner.
const DELETE_IF_OWNER: &str =
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end";

/// The logout index of a `sid` or `sub`, and the plain set older versions kept (sessions they stored are ended by
/// any logout naming them, whatever its age: their login time was not recorded).
fn index(sid: Option<&str>, sub: Option<&str>) -> Option<(String, String)> {
    match (sid, sub) {
        (Some(sid), _) => Some((format!("idgate:z:sid:{sid}"), format!("idgate:sid:{sid}"))),
        (None, Some(sub)) => Some((format!("idgate:z:sub:{sub}"), format!("idgate:sub:{sub}"))),
        (None, None) => None,
    }
}

/// Sessions in Redis, shared by replicas.
pub struct RedisStore {
    // Boxed: the Sentinel and Cluster clients are large, and `Store` holds a `RedisStore` by value.
    connector: Box<Connector>,
    conn: Mutex<Option<Conn>>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RedisStore")
    }
}

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError(e.to_string())
}

impl RedisStore {
    /// A store for `url` (any form `session.redis_url` takes: config/redis_url.rs); nothing is connected yet.
    pub fn new(url: &str) -> Result<Self, StoreError> {
        Ok(Self { connector: Box::new(Connector::new(url, TIMEOUT).map_err(err)?), conn: Mutex::new(None) })
    }

    /// The live connection, or a new one. Waiting for another caller's attempt counts against the same timeout, so
    /// under load a Redis that does not answer makes requests fail after `TIMEOUT`, never queue behind each other.
    async fn conn(&self) -> Result<Conn, StoreError> {
        let attempt = async {
            let mut slot = self.conn.lock().await;
            if let Some(c) = slot.as_ref() {
                return Ok(c.clone());
            }
            let c = self.connector.connect(TIMEOUT).await.map_err(err)?;
            *slot = Some(c.clone());
            Ok(c)
        };
        tokio::time::timeout(TIMEOUT, attempt).await.map_err(|_| err("connect timed out"))?
    }

    /// Runs one command; a failure drops the connection so the next call reconnects (and, with Sentinel, asks the
    /// sentinels again which node is the primary). A cluster connection is kept: it reconnects to a node and
    /// refreshes its slot map by itself, and the other shards' sessions stay served meanwhile.
    async fn run<T, F, Fut>(&self, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let conn = self.conn().await?;
        let keep = conn.heals_itself();
        let outcome = tokio::time::timeout(TIMEOUT, f(conn)).await;
        if !matches!(outcome, Ok(Ok(_))) && !keep {
            *self.conn.lock().await = None;
        }
        match outcome {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(err(e)),
            Err(_) => Err(err("command timed out")),
        }
    }

    /// Adds the session to its owner's logout indexes (one key per script), making each index live at least as long
    /// as this session.
    async fn index_owner(&self, key: &Key, owner: &Owner, ttl_secs: u64) -> Result<(), StoreError> {
        let keep = ttl_secs.saturating_add(INDEX_GRACE_SECS);
        for idx in indexes(owner) {
            let (member, created) = (hex(key), owner.created);
            self.run(|mut c| async move {
                redis::cmd("EVAL")
                    .arg(INDEX_AND_EXTEND)
                    .arg(1)
                    .arg(&idx)
                    .arg(&member)
                    .arg(created)
                    .arg(keep)
                    .query_async::<()>(&mut c)
                    .await
            })
            .await?;
        }
        Ok(())
    }

    pub(super) async fn put(&self, key: &Key, value: Vec<u8>, owner: &Owner, ttl_secs: u64) -> Result<(), StoreError> {
        // Indexed first: a session whose indexing failed is never written, so none escapes back-channel logout.
        self.index_owner(key, owner, ttl_secs).await?;
        let k = format!("idgate:s:{}", hex(key));
        self.run(|mut c| async move { c.set_ex::<_, _, ()>(&k, value, ttl_secs).await }).await
    }

    pub(super) async fn replace(
        &self,
        key: &Key,
        value: Vec<u8>,
        owner: &Owner,
        ttl_secs: u64,
    ) -> Result<bool, StoreError> {
        let k = format!("idgate:s:{}", hex(key));
        // SET … XX writes only over a key that still exists (a delete in between wins); only the owner indexes
        // are written after it, never the value again.
        let written = self
            .run(|mut c| async move {
                redis::cmd("SET")
                    .arg(&k)
                    .arg(value)
                    .arg("XX")
                    .arg("EX")
                    .arg(ttl_secs)
                    .query_async::<Option<String>>(&mut c)
                    .await
            })
            .await?
            .is_some();
        if written {
            self.index_owner(key, owner, ttl_secs).await?;
        }
        Ok(written)
    }

    pub(super) async fn get(&self, key: &Key) -> Result<Option<Vec<u8>>, StoreError> {
        let k = format!("idgate:s:{}", hex(key));
        self.run(|mut c| async move { c.get::<_, Option<Vec<u8>>>(k).await }).await
    }

    pub(super) async fn delete(&self, key: &Key) -> Result<(), StoreError> {
        let k = format!("idgate:s:{}", hex(key));
        self.run(|mut c| async move { c.del::<_, ()>(k).await }).await
    }

    pub(super) async fn delete_owned(
        &self,
        sid: Option<&str>,
        sub: Option<&str>,
        issued_at: i64,
    ) -> Result<Ended, StoreError> {
        let Some((idx, legacy)) = index(sid, sub) else { return Ok(Ended::default()) };
        let i = idx.clone();
        let (doomed, newer): (Vec<String>, Vec<String>) = self
            .run(|mut c| async move {
                redis::pipe()
                    .zrangebyscore(&i, "-inf", issued_at)
                    .zrangebyscore(&i, format!("({issued_at}"), "+inf")
                    .query_async(&mut c)
                    .await
            })
            .await?;
        // Kept are the later logins still stored: the index also names sessions signed out or expired since.
        let newer: Vec<String> = newer.iter().map(|m| format!("idgate:s:{m}")).collect();
        let kept_newer = if newer.is_empty() {
            0
        } else {
            self.run(|mut c| async move { c.exists::<_, usize>(&newer).await }).await?
        };
        let l = legacy.clone();
        let old: Vec<String> = self.run(|mut c| async move { c.smembers(&l).await }).await?;
        let keys: Vec<String> = doomed.iter().chain(&old).map(|m| format!("idgate:s:{m}")).collect();
        // Sessions first, then the index entries naming them: an interruption leaves entries for gone sessions,
        // never a session its index lost.
        let ended =
            if keys.is_empty() { 0 } else { self.run(|mut c| async move { c.del::<_, usize>(&keys).await }).await? };
        if !doomed.is_empty() {
            self.run(|mut c| async move { c.zrem::<_, _, ()>(&idx, &doomed).await }).await?;
        }
        if !old.is_empty() {
            self.run(|mut c| async move { c.del::<_, ()>(&legacy).await }).await?;
        }
        Ok(Ended { ended, kept_newer })
    }

    /// `idgate:p:<key>`: a preserved form post, kept outside the session indexes.
    pub(super) async fn put_blob(&self, key: &Key, value: Vec<u8>, ttl_secs: u64) -> Result<(), StoreError> {
        let k = format!("idgate:p:{}", hex(key));
        self.run(|mut c| async move { c.set_ex::<_, _, ()>(k, value, ttl_secs.max(1)).await }).await
    }

    /// GETDEL: one caller takes the value, however many race for it.
    pub(super) async fn take_blob(&self, key: &Key) -> Result<Option<Vec<u8>>, StoreError> {
        let k = format!("idgate:p:{}", hex(key));
        self.run(|mut c| async move { c.get_del::<_, Option<Vec<u8>>>(k).await }).await
    }

    pub(super) async fn first_use(&self, name: &str, ttl_secs: u64) -> Result<bool, StoreError> {
        let k = format!("idgate:once:{name}");
        self.run(|mut c| async move {
            let opts = redis::SetOptions::default()
                .conditional_set(redis::ExistenceCheck::NX)
                .with_expiration(redis::SetExpiry::EX(ttl_secs.max(1)));
            let set: Option<String> = c.set_options(k, "1", opts).await?;
            Ok(set.is_some())
        })
        .await
    }

    pub(super) async fn try_lock(&self, name: &str, owner: &str, ttl_ms: u64) -> Result<bool, StoreError> {
        let k = format!("idgate:lock:{name}");
        let owner = owner.to_owned();
        self.run(|mut c| async move {
            let opts = redis::SetOptions::default()
                .conditional_set(redis::ExistenceCheck::NX)
                .with_expiration(redis::SetExpiry::PX(ttl_ms));
            let set: Option<String> = c.set_options(k, owner, opts).await?;
            Ok(set.is_some())
        })
        .await
    }

    /// Runs `script` on the lock `name` with the owner token (and extra arguments); true when it answered 1.
    async fn if_owner(
        &self,
        script: &'static str,
        name: &str,
        owner: &str,
        extra: Option<u64>,
    ) -> Result<bool, StoreError> {
        let k = format!("idgate:lock:{name}");
        let owner = owner.to_owned();
        self.run(|mut c| async move {
            let mut cmd = redis::cmd("EVAL");
            cmd.arg(script).arg(1).arg(k).arg(owner);
            if let Some(v) = extra {
                cmd.arg(v);
            }
            let n: i64 = cmd.query_async(&mut c).await?;
            Ok(n == 1)
        })
        .await
    }

    pub(super) async fn renew(&self, name: &str, owner: &str, ttl_ms: u64) -> Result<bool, StoreError> {
        self.if_owner(RENEW_IF_OWNER, name, owner, Some(ttl_ms)).await
    }

    pub(super) async fn unlock(&self, name: &str, owner: &str) -> bool {
        match self.if_owner(DELETE_IF_OWNER, name, owner, None).await {
            Ok(released) => released,
            Err(e) => {
                tracing::warn!(error = %e, "could not release a refresh lock; it lapses with its lease");
                false
            }
        }
    }

    pub(super) async fn ping(&self) -> Result<(), StoreError> {
        self.run(|c| async move { c.ping().await }).await
    }
}

/// The indexes back-channel logout finds a session's key by: its `sub`, and its `sid` when it has one.
fn indexes(owner: &Owner) -> Vec<String> {
    let mut out = vec![format!("idgate:z:sub:{}", owner.sub)];
    if let Some(sid) = &owner.sid {
        out.push(format!("idgate:z:sid:{sid}"));
    }
    out
}
