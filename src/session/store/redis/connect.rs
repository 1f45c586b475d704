//! Connections to the three Redis topologies behind one [`Conn`]: one server (a `ConnectionManager`), the primary
//! Sentinel names (looked up again on every reconnect, so a failover is followed without a restart), and a Redis
//! Cluster (the `redis` crate's cluster client: slot map, `MOVED`/`ASK` redirects, refresh after a failover). The
//! protocol is the `redis` crate's; nothing here speaks it by hand.

use std::time::Duration;

use redis::{
    Cmd, ConnectionAddr, Pipeline, RedisFuture, RedisResult, TlsMode, Value,
    aio::{ConnectionLike, ConnectionManager, MultiplexedConnection},
    cluster::ClusterClient,
    cluster_async::ClusterConnection,
    sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType},
};
use tokio::sync::Mutex;

use crate::config::redis_url::{MultiHost, RedisUrl, Topology};

/// How a connection is (re)made.
pub(super) enum Connector {
    Node(redis::Client),
    /// Needs `&mut` to ask the sentinels (it caches its connections to them).
    Sentinel(Mutex<SentinelClient>),
    Cluster(ClusterClient),
}

/// A live connection of any topology; cheap to clone (all three are multiplexed handles).
#[derive(Clone)]
pub(super) enum Conn {
    Node(ConnectionManager),
    Primary(MultiplexedConnection),
    Cluster(ClusterConnection),
}

/// The `redis` crate's own error for a URL it refuses, or a config error of ours (never repeating the URL).
fn invalid(why: String) -> redis::RedisError {
    redis::RedisError::from((redis::ErrorKind::InvalidClientConfig, "invalid session.redis_url", why))
}

impl Connector {
    /// A connector for `url` (as checked by config); nothing is connected yet.
    pub(super) fn new(url: &str, timeout: Duration) -> RedisResult<Self> {
        match crate::config::redis_url::parse(url).map_err(|e| invalid(e.to_string()))? {
            RedisUrl::Node(url) => Ok(Connector::Node(redis::Client::open(url.expose())?)),
            RedisUrl::Multi(m) => match &m.topology {
                Topology::Sentinel { service } => Ok(Connector::Sentinel(Mutex::new(sentinel(&m, service)?))),
                Topology::Cluster => Ok(Connector::Cluster(cluster(&m, timeout)?)),
                Topology::Node => Err(invalid("a multi-host URL names a single node".into())),
            },
        }
    }

    /// Connects (for Sentinel: to the primary the sentinels name now, checked with `ROLE`).
    pub(super) async fn connect(&self, timeout: Duration) -> RedisResult<Conn> {
        match self {
            Connector::Node(client) => {
                let config = redis::aio::ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(timeout))
                    .set_response_timeout(Some(timeout))
                    .set_number_of_retries(1);
                Ok(Conn::Node(ConnectionManager::new_with_config(client.clone(), config).await?))
            }
            Connector::Sentinel(sentinel) => {
                let primary = sentinel.lock().await.async_get_client().await?;
                let config = redis::AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(timeout))
                    .set_response_timeout(Some(timeout));
                Ok(Conn::Primary(primary.get_multiplexed_async_connection_with_config(&config).await?))
            }
            Connector::Cluster(client) => Ok(Conn::Cluster(client.get_async_connection().await?)),
        }
    }
}

impl Conn {
    /// Whether this connection recovers from a failed node by itself (the cluster client: per-node reconnects,
    /// slot map refreshed after `MOVED` or a lost node), so a failure must not throw it away.
    pub(super) fn heals_itself(&self) -> bool {
        matches!(self, Conn::Cluster(_))
    }

    /// Whether the store answers: the server, the primary, or (Cluster) every primary — one that is down holds
    /// the sessions of its slots.
    pub(super) async fn ping(self) -> RedisResult<()> {
        use redis::cluster_routing::{MultipleNodeRoutingInfo, ResponsePolicy, RoutingInfo};
        match self {
            Conn::Cluster(mut c) => {
                let all =
                    RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, Some(ResponsePolicy::AllSucceeded)));
                c.route_command(redis::cmd("PING"), all).await.map(|_| ())
            }
            mut c => redis::cmd("PING").query_async::<String>(&mut c).await.map(|_| ()),
        }
    }
}

fn addr(host: &str, port: u16, tls: bool) -> ConnectionAddr {
    if tls {
        ConnectionAddr::TcpTls { host: host.to_owned(), port, insecure: false, tls_params: None }
    } else {
        ConnectionAddr::Tcp(host.to_owned(), port)
    }
}

fn sentinel(m: &MultiHost, service: &str) -> RedisResult<SentinelClient> {
    let sentinels = m.hosts.iter().map(|(h, p)| addr(h, *p, m.tls));
    let mut b =
        SentinelClientBuilder::new(sentinels, service, SentinelServerType::Master)?.set_client_to_redis_db(m.db);
    if m.tls {
        b = b.set_client_to_redis_tls_mode(TlsMode::Secure).set_client_to_sentinel_tls_mode(TlsMode::Secure);
    }
    if let Some(u) = &m.username {
        b = b.set_client_to_redis_username(u);
    }
    if let Some(p) = &m.password {
        b = b.set_client_to_redis_password(p.expose());
    }
    if let Some(u) = &m.sentinel_username {
        b = b.set_client_to_sentinel_username(u);
    }
    if let Some(p) = &m.sentinel_password {
        b = b.set_client_to_sentinel_password(p.expose());
    }
    b.build()
}

fn cluster(m: &MultiHost, timeout: Duration) -> RedisResult<ClusterClient> {
    let mut b = ClusterClient::builder(m.hosts.iter().map(|(h, p)| addr(h, *p, m.tls)))
        .connection_timeout(timeout)
        .response_timeout(timeout)
        // A node that went away is retried a few times, briefly: during a failover the request answers 503 within
        // the store's timeout rather than waiting out a long backoff; the next one finds the promoted replica.
        .retries(3)
        .min_retry_wait(20)
        .max_retry_wait(200);
    if m.tls {
        b = b.tls(TlsMode::Secure);
    }
    if let Some(u) = &m.username {
        b = b.username(u);
    }
    if let Some(p) = &m.password {
        b = b.password(p.expose());
    }
    b.build()
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Node(c) => c.req_packed_command(cmd),
            Conn::Primary(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Node(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Primary(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Node(c) => c.get_db(),
            Conn::Primary(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}
