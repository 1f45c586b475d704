//! Real Redis processes for the tests, from Debian's `redis-server`, `redis-sentinel` and `redis-cli`, on free
//! loopback ports and killed on drop: one server without a password that can be stopped and restarted ([`Redis`]),
//! a primary + replica + three sentinels ([`Sentinel`]) and a cluster of three primaries with a replica each
//! ([`Cluster`]). Timeouts are short (`down-after-milliseconds` 500, `cluster-node-timeout` 1000) so a failover takes
//! a few seconds. The tests fail, rather than skip, when a binary is missing: scripts/deps.sh installs them.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    process::{Child, Stdio},
    time::Duration,
};

use crate::harness::{eventually, until_listening};

/// One server without a password, stopped and restarted on the same port (its data is not persisted).
pub struct Redis {
    child: Option<std::process::Child>,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Redis {
    pub async fn start() -> Redis {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut r = Redis { child: None, port, _dir: tempfile::tempdir().unwrap() };
        r.restart().await;
        r
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Stops the server (data is not persisted).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port.
    pub async fn restart(&mut self) {
        self.stop();
        let child = std::process::Command::new(bin("redis-server"))
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self._dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        crate::harness::until_listening("redis-server", ([127, 0, 0, 1], self.port).into()).await;
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Where Debian puts a Redis binary.
pub(crate) fn bin(name: &str) -> PathBuf {
    ["/usr/bin", "/usr/local/bin"]
        .into_iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("{name} is not installed: run scripts/deps.sh"))
}

/// A loopback port that is free, and (for cluster nodes) whose bus port +10000 is free too.
pub(crate) fn free_port(with_bus: bool) -> u16 {
    loop {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        if !with_bus {
            return port;
        }
        if port < 55_000 && std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}

/// Every data node requires this password (`requirepass`, and `masterauth` towards its primary).
pub(crate) const DATA_PASSWORD: &str = "data-pw-5e1f";
/// The sentinels require this one (`requirepass`, `sentinel sentinel-pass` among themselves).
pub(crate) const SENTINEL_PASSWORD: &str = "sentinel-pw-c07a";

/// One Redis process, killed (SIGKILL) on drop.
pub(crate) struct Proc {
    pub(crate) child: Option<Child>,
    pub(crate) port: u16,
    password: &'static str,
}

impl Proc {
    pub(crate) async fn spawn(
        what: &str,
        program: &Path,
        port: u16,
        args: &[String],
        dir: &Path,
        password: &'static str,
    ) -> Proc {
        let child = std::process::Command::new(program)
            .args(args)
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        until_listening(what, ([127, 0, 0, 1], port).into()).await;
        Proc { child: Some(child), port, password }
    }

    pub(crate) fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://:{}@127.0.0.1:{}/", self.password, self.port)
    }

    pub(crate) async fn conn(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url()).unwrap().get_multiplexed_async_connection().await.unwrap()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

pub(crate) fn server_args(port: u16, extra: &[&str]) -> Vec<String> {
    let port = port.to_string();
    let mut args: Vec<String> = [
        "--port",
        &port,
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        ".",
        "--requirepass",
        DATA_PASSWORD,
        "--masterauth",
        DATA_PASSWORD,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// Waits until the replica of `primary` has acknowledged every write made so far (`WAIT`, in short steps: the
/// client's response timeout is shorter than a long `WAIT`).
pub(crate) async fn replicated(primary: &Proc) {
    let mut conn = primary.conn().await;
    eventually("the replica acknowledges every write", Duration::from_secs(10), || {
        let mut conn = conn.clone();
        async move {
            let acked: i64 = redis::cmd("WAIT").arg(1).arg(100).query_async(&mut conn).await.ok()?;
            (acked >= 1).then_some(())
        }
    })
    .await;
    let _: () = redis::cmd("PING").query_async(&mut conn).await.unwrap();
}

pub(crate) async fn info(p: &Proc, section: &str) -> String {
    redis::cmd("INFO").arg(section).query_async(&mut p.conn().await).await.unwrap_or_default()
}

/// A primary, one replica and three sentinels watching them as `mymaster` (quorum 2).
pub struct Sentinel {
    pub(crate) primary: Proc,
    pub(crate) replica: Proc,
    pub(crate) sentinels: Vec<Proc>,
    _dir: tempfile::TempDir,
}

impl Sentinel {
    pub async fn start() -> Sentinel {
        let dir = tempfile::tempdir().unwrap();
        let (p, r) = (free_port(false), free_port(false));
        let server = bin("redis-server");
        let primary = Proc::spawn("redis primary", &server, p, &server_args(p, &[]), dir.path(), DATA_PASSWORD).await;
        let replicaof = format!("127.0.0.1 {p}");
        let replica = Proc::spawn(
            "redis replica",
            &server,
            r,
            &server_args(r, &["--replicaof", &replicaof]),
            dir.path(),
            DATA_PASSWORD,
        )
        .await;
        let mut sentinels = Vec::new();
        for i in 0..3 {
            let port = free_port(false);
            let conf = dir.path().join(format!("sentinel-{i}.conf"));
            std::fs::write(
                &conf,
                format!(
                    "port {port}\nbind 127.0.0.1\ndir {dir}\nsentinel monitor mymaster 127.0.0.1 {p} 2\n\
                     sentinel down-after-milliseconds mymaster 500\nsentinel failover-timeout mymaster 2000\n\
                     sentinel parallel-syncs mymaster 1\nsentinel auth-pass mymaster {DATA_PASSWORD}\n\
                     requirepass {SENTINEL_PASSWORD}\nsentinel sentinel-pass {SENTINEL_PASSWORD}\n",
                    dir = dir.path().display()
                ),
            )
            .unwrap();
            let args = [conf.display().to_string()];
            sentinels.push(
                Proc::spawn("redis-sentinel", &bin("redis-sentinel"), port, &args, dir.path(), SENTINEL_PASSWORD).await,
            );
        }
        let s = Sentinel { primary, replica, sentinels, _dir: dir };
        // Ready when the replica is in sync and every sentinel knows the replica and the two other sentinels (a
        // failover needs a majority of them to agree).
        eventually("the replica is in sync", Duration::from_secs(15), || async {
            info(&s.replica, "replication").await.contains("master_link_status:up").then_some(())
        })
        .await;
        eventually("the sentinels know each other and the replica", Duration::from_secs(20), || async {
            for sentinel in &s.sentinels {
                let m = s.master(sentinel).await;
                if m.get("num-other-sentinels").map(String::as_str) != Some("2")
                    || m.get("num-slaves").map(String::as_str) != Some("1")
                {
                    return None;
                }
            }
            Some(())
        })
        .await;
        s
    }

    /// What one sentinel says of `mymaster`.
    async fn master(&self, sentinel: &Proc) -> HashMap<String, String> {
        redis::cmd("SENTINEL")
            .arg("MASTER")
            .arg("mymaster")
            .query_async(&mut sentinel.conn().await)
            .await
            .unwrap_or_default()
    }

    pub fn url(&self) -> String {
        let hosts: Vec<String> = self.sentinels.iter().map(|s| format!("127.0.0.1:{}", s.port)).collect();
        format!("redis+sentinel://:{DATA_PASSWORD}@{}/mymaster?sentinel_password={SENTINEL_PASSWORD}", hosts.join(","))
    }
}

/// Three primaries with a replica each (`redis-cli --cluster create … --cluster-replicas 1`).
pub struct Cluster {
    pub(crate) nodes: Vec<Proc>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    pub async fn start() -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let server = bin("redis-server");
        let mut nodes = Vec::new();
        for i in 0..6 {
            let port = free_port(true);
            let node_dir = dir.path().join(format!("node-{i}"));
            std::fs::create_dir(&node_dir).unwrap();
            let args = server_args(
                port,
                &[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "1000",
                    "--cluster-require-full-coverage",
                    "no",
                ],
            );
            nodes.push(Proc::spawn("redis cluster node", &server, port, &args, &node_dir, DATA_PASSWORD).await);
        }
        let mut create = std::process::Command::new(bin("redis-cli"));
        create.env("REDISCLI_AUTH", DATA_PASSWORD).arg("--cluster").arg("create");
        for n in &nodes {
            create.arg(format!("127.0.0.1:{}", n.port));
        }
        let out = create.args(["--cluster-replicas", "1", "--cluster-yes"]).output().unwrap();
        assert!(out.status.success(), "redis-cli --cluster create: {}", String::from_utf8_lossy(&out.stdout));
        let c = Cluster { nodes, _dir: dir };
        eventually("every node sees the cluster ok, with its replicas", Duration::from_secs(20), || async {
            for n in &c.nodes {
                let info: String = redis::cmd("CLUSTER").arg("INFO").query_async(&mut n.conn().await).await.ok()?;
                if !info.contains("cluster_state:ok") || !info.contains("cluster_known_nodes:6") {
                    return None;
                }
            }
            for p in c.primaries().await {
                if !info(&c.nodes[p], "replication").await.contains("connected_slaves:1") {
                    return None;
                }
            }
            Some(())
        })
        .await;
        c
    }

    /// The indexes of the nodes that are primaries now.
    pub(crate) async fn primaries(&self) -> Vec<usize> {
        let mut out = Vec::new();
        for (i, n) in self.nodes.iter().enumerate() {
            if n.child.is_some() && info(n, "replication").await.contains("role:master") {
                out.push(i);
            }
        }
        out
    }

    /// The seed nodes of the URL: the first three (created as primaries).
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self.nodes.iter().take(3).map(|n| format!("127.0.0.1:{}", n.port)).collect();
        format!("redis+cluster://:{DATA_PASSWORD}@{}", hosts.join(","))
    }
}
