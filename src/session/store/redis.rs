//! The Redis store: `idgate:s:<key>` holds a session with an expiry at its token's `exp`; `idgate:sid:<sid>` and
//! `idgate:sub:<sub>` index keys for back-channel logout; `idgate:lock:<name>` makes refreshes single-flight across
//! replicas. The connection is made lazily and re-made after failures, so idgate starts (not ready) while Redis is
//! down and resumes when it returns.

use std::time::Duration;

use redis::{AsyncCommands, aio::ConnectionManager};
use tokio::sync::Mutex;

use super::{Key, Owner, StoreError, hex};

const TIMEOUT: Duration = Duration::from_secs(2);
/// Index sets outlive any session they name by at most this long.
const INDEX_TTL_SECS: i64 = 36 * 3600;

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
        let member = hex(key);
        let mut indexes = vec![format!("idgate:sub:{}", owner.sub)];
        if let Some(sid) = &owner.sid {
            indexes.push(format!("idgate:sid:{sid}"));
        }
        self.run(|mut c| async move {
            let mut pipe = redis::pipe();
            pipe.atomic().set_ex(&k, value, ttl_secs).ignore();
            for idx in &indexes {
                pipe.sadd(idx, &member).ignore().expire(idx, INDEX_TTL_SECS).ignore();
            }
            pipe.query_async::<()>(&mut c).await
        })
        .await
    }

    pub(super) async fn get(&self, key: &Key) -> Result<Option<Vec<u8>>, StoreError> {
        let k = format!("idgate:s:{}", hex(key));
        self.run(|mut c| async move { c.get::<_, Option<Vec<u8>>>(k).await }).await
    }

    pub(super) async fn delete(&self, key: &Key) -> Result<(), StoreError> {
        let k = format!("idgate:s:{}", hex(key));
        self.run(|mut c| async move { c.del::<_, ()>(k).await }).await
    }

    pub(super) async fn delete_owned(&self, sid: Option<&str>, sub: Option<&str>) -> Result<usize, StoreError> {
        let idx = match (sid, sub) {
            (Some(sid), _) => format!("idgate:sid:{sid}"),
            (None, Some(sub)) => format!("idgate:sub:{sub}"),
            (None, None) => return Ok(0),
        };
        let idx2 = idx.clone();
        let members: Vec<String> = self.run(|mut c| async move { c.smembers(idx2).await }).await?;
        let keys: Vec<String> = members.iter().map(|m| format!("idgate:s:{m}")).collect();
        self.run(|mut c| async move {
            let mut pipe = redis::pipe();
            pipe.atomic();
            for k in &keys {
                pipe.del(k);
            }
            pipe.del(&idx).ignore();
            let deleted: Vec<usize> = pipe.query_async(&mut c).await?;
            Ok(deleted.into_iter().sum())
        })
        .await
    }

    pub(super) async fn try_lock(&self, name: &str, ttl_ms: u64) -> Result<bool, StoreError> {
        let k = format!("idgate:lock:{name}");
        self.run(|mut c| async move {
            let opts = redis::SetOptions::default()
                .conditional_set(redis::ExistenceCheck::NX)
                .with_expiration(redis::SetExpiry::PX(ttl_ms));
            let set: Option<String> = c.set_options(k, "1", opts).await?;
            Ok(set.is_some())
        })
        .await
    }

    pub(super) async fn unlock(&self, name: &str) {
        let k = format!("idgate:lock:{name}");
        let _ = self.run(|mut c| async move { c.del::<_, ()>(k).await }).await;
    }

    pub(super) async fn ping(&self) -> Result<(), StoreError> {
        self.run(|mut c| async move { redis::cmd("PING").query_async::<String>(&mut c).await.map(|_| ()) }).await
    }
}
