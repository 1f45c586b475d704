//! The Redis store: `idgate:s:<key>` holds a session with an expiry at its token's `exp`; the sorted sets
//! `idgate:z:sid:<sid>` and `idgate:z:sub:<sub>` index keys for back-channel logout, scored by when the login was
//! made; `idgate:once:<name>` remembers used logout-token `jti`s for every replica; `idgate:lock:<name>` makes
//! refreshes single-flight across replicas, held under a random owner token (renewed and released only by its
//! owner, compare-and-delete in one script). The connection is made lazily and re-made after failures, so idgate
//! starts (not ready) while Redis is down and resumes when it returns.

use std::time::Duration;

use redis::{AsyncCommands, aio::ConnectionManager};
use tokio::sync::Mutex;

use super::{Ended, Key, Owner, StoreError, hex};

const TIMEOUT: Duration = Duration::from_secs(2);
/// Index sets outlive any session they name by at most this long.
const INDEX_TTL_SECS: i64 = 36 * 3600;
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
    client: redis::Client,
    conn: Mutex<Option<ConnectionManager>>,
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
    /// A store for `url` (`redis://` or `rediss://`); nothing is connected yet.
    pub fn new(url: &str) -> Result<Self, StoreError> {
        Ok(Self { client: redis::Client::open(url).map_err(err)?, conn: Mutex::new(None) })
    }

    async fn conn(&self) -> Result<ConnectionManager, StoreError> {
        let mut slot = self.conn.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(TIMEOUT))
            .set_response_timeout(Some(TIMEOUT))
            .set_number_of_retries(1);
        let c = tokio::time::timeout(TIMEOUT, ConnectionManager::new_with_config(self.client.clone(), config))
            .await
            .map_err(|_| err("connect timed out"))?
            .map_err(err)?;
        *slot = Some(c.clone());
        Ok(c)
    }

    /// Runs one command; a failure drops the connection so the next call reconnects.
    async fn run<T, F, Fut>(&self, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let conn = self.conn().await?;
        match tokio::time::timeout(TIMEOUT, f(conn)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                *self.conn.lock().await = None;
                Err(err(e))
            }
            Err(_) => {
                *self.conn.lock().await = None;
                Err(err("command timed out"))
            }
        }
    }

    pub(super) async fn put(&self, key: &Key, value: Vec<u8>, owner: &Owner, ttl_secs: u64) -> Result<(), StoreError> {
        let k = format!("idgate:s:{}", hex(key));
        let (member, indexes, created) = (hex(key), indexes(owner), owner.created);
        self.run(|mut c| async move {
            let mut pipe = redis::pipe();
            pipe.atomic().set_ex(&k, value, ttl_secs).ignore();
            for idx in &indexes {
                pipe.zadd(idx, &member, created).ignore().expire(idx, INDEX_TTL_SECS).ignore();
            }
            pipe.query_async::<()>(&mut c).await
        })
        .await
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
            let (member, indexes, created) = (hex(key), indexes(owner), owner.created);
            self.run(|mut c| async move {
                let mut pipe = redis::pipe();
                for idx in &indexes {
                    pipe.zadd(idx, &member, created).ignore().expire(idx, INDEX_TTL_SECS).ignore();
                }
                pipe.query_async::<()>(&mut c).await
            })
            .await?;
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
        let (i, l) = (idx.clone(), legacy.clone());
        let (doomed, kept_newer, old): (Vec<String>, usize, Vec<String>) = self
            .run(|mut c| async move {
                redis::pipe()
                    .zrangebyscore(&i, "-inf", issued_at)
                    .zcount(&i, format!("({issued_at}"), "+inf")
                    .smembers(&l)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        let keys: Vec<String> = doomed.iter().chain(&old).map(|m| format!("idgate:s:{m}")).collect();
        let ended = self
            .run(|mut c| async move {
                let mut pipe = redis::pipe();
                pipe.atomic();
                for k in &keys {
                    pipe.del(k);
                }
                if !doomed.is_empty() {
                    pipe.zrem(&idx, &doomed).ignore();
                }
                pipe.del(&legacy).ignore();
                let deleted: Vec<usize> = pipe.query_async(&mut c).await?;
                Ok(deleted.into_iter().sum())
            })
            .await?;
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
        self.run(|mut c| async move { redis::cmd("PING").query_async::<String>(&mut c).await.map(|_| ()) }).await
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
