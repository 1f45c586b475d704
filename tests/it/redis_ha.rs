//! Redis Sentinel and Redis Cluster (issue 16 part 2), with real Debian `redis-server`, `redis-sentinel` and
//! `redis-cli` processes started by each test (tests/it/redis.rs): a primary + replica + three sentinels, and a
//! cluster of three primaries with a replica each. Each topology runs the Redis session scenarios of sessions.rs and
//! attacks.rs, and a failover under load (the primary SIGKILLed: 503s for the failover window, then service without
//! a restart and without losing a session the replica had). Timeouts are short (`down-after-milliseconds` 500,
//! `cluster-node-timeout` 1000) so a failover takes a few seconds. The tests fail, rather than skip, when a binary is
//! missing: scripts/deps.sh installs them.

use std::{path::Path, process::Stdio, sync::Arc, time::Duration};

use http::StatusCode;
use idgate::config::{Secret, StoreKind};
use redis::AsyncCommands;

use crate::{
    harness::{Browser, TestGate, eventually},
    redis::{Cluster, DATA_PASSWORD, Proc, SENTINEL_PASSWORD, Sentinel, bin, free_port, info, replicated, server_args},
};

fn redis_store(url: &str) -> StoreKind {
    StoreKind::Redis { url: Secret::new(url) }
}

/// The Redis session scenarios of sessions.rs and attacks.rs, in turn, on the Redis at `url`.
async fn scenarios(url: String) {
    crate::sessions::conformance(redis_store(&url)).await;
    crate::sessions::two_replicas_share_sessions(url.clone()).await;
    crate::sessions::refresh_single_flight_across_replicas(url.clone()).await;
    crate::attacks::logout_token_replayed_to_another_replica(url.clone()).await;
    crate::attacks::old_logout_tokens(vec![redis_store(&url)]).await;
    crate::attacks::lapsed_lock_holder(url.clone()).await;
    crate::attacks::refresh_slower_than_the_lock_lease(url.clone()).await;
    crate::attacks::refresh_in_flight_does_not_revive(vec![redis_store(&url)]).await;
    preserved_post_blob_is_taken_once(&url).await;
}

/// The preserved form post's store entry (login::preserved_post) on this topology: kept, taken once.
async fn preserved_post_blob_is_taken_once(url: &str) {
    use idgate::session::store::{Store, redis::RedisStore};
    let store = Store::Redis(RedisStore::new(url).unwrap());
    let key = [7u8; 32];
    store.put_blob(&key, b"a=1&b=2".to_vec(), 60).await.unwrap();
    assert_eq!(store.take_blob(&key).await.unwrap().as_deref(), Some(&b"a=1&b=2"[..]));
    assert_eq!(store.take_blob(&key).await.unwrap(), None, "taken once");
}

#[tokio::test]
async fn sentinel_runs_the_redis_session_scenarios_and_refuses_unknown_services_and_wrong_passwords() {
    let s = Sentinel::start().await;
    scenarios(s.url()).await;
    let hosts: Vec<String> = s.sentinels.iter().map(|s| format!("127.0.0.1:{}", s.port)).collect();
    let hosts = hosts.join(",");
    let sp = format!("sentinel_password={SENTINEL_PASSWORD}");
    for (url, reason) in [
        // The sentinels watch no `othermaster`: no node is ever taken for it.
        (
            format!("redis+sentinel://:{DATA_PASSWORD}@{hosts}/othermaster?{sp}"),
            "Master with given name not found in sentinel",
        ),
        (format!("redis+sentinel://:wrong-data-pw@{hosts}/mymaster?{sp}"), "Password authentication failed"),
        (
            format!("redis+sentinel://:{DATA_PASSWORD}@{hosts}/mymaster?sentinel_password=wrong-sentinel-pw"),
            "Password authentication failed",
        ),
    ] {
        store_refused(&url, reason).await;
    }
}

/// A gate on the store at `url` that cannot be used: not ready (with `reason`), a login answers 503, and neither the
/// answers nor the logs show a password.
async fn store_refused(url: &str, reason: &str) {
    let logs = crate::attacks::Logs::capture();
    let u = url.to_owned();
    let gate = TestGate::builder().settings(move |st| st.session.store = redis_store(&u)).spawn().await;
    let ready = Browser::new().api().get(&format!("{}/readyz", gate.admin)).await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE, "{url}");
    assert!(ready.text().to_lowercase().contains(&reason.to_lowercase()), "{url}: {}", ready.text());
    let landed = gate.browser().login_to_callback(&gate.base, "/", "mia").await;
    assert_eq!(landed.status, StatusCode::SERVICE_UNAVAILABLE, "{url}");
    assert!(landed.text().contains("Sessions are unavailable"), "{}", landed.text());
    for secret in [DATA_PASSWORD, SENTINEL_PASSWORD, "wrong-data-pw", "wrong-sentinel-pw"] {
        assert!(!ready.text().contains(secret) && !landed.text().contains(secret), "{url}");
        assert!(!logs.text().contains(secret), "a password in the logs: {}", logs.text());
    }
    assert!(logs.count("session store unavailable") > 0, "{}", logs.text());
    gate.shutdown().await;
}

#[tokio::test]
async fn cluster_runs_the_redis_session_scenarios() {
    let c = Cluster::start().await;
    scenarios(c.url()).await;
}

/// What the load saw across a failover: per round (one request for each session), the statuses.
struct Outage {
    rounds: Vec<Vec<StatusCode>>,
    /// From the kill to the first round without a 503 after the outage.
    window: Duration,
}

/// Kills a primary with `kill` while requests for every session run round after round; returns when a round
/// without a 503 follows one with a 503 (503 pages checked for their text).
async fn failover_under_load(gate: &TestGate, browsers: &[Browser], kill: impl FnOnce()) -> Outage {
    let url = format!("{}/", gate.base);
    let mut rounds = Vec::new();
    let round = |rounds: &mut Vec<Vec<StatusCode>>| {
        let url = url.clone();
        let browsers: Vec<Browser> = browsers.iter().map(Browser::api).collect();
        let n = rounds.len();
        async move {
            let mut statuses = Vec::new();
            for b in &browsers {
                let r = b.get(&url).await;
                if r.status == StatusCode::SERVICE_UNAVAILABLE {
                    assert!(r.text().contains("Sessions are unavailable"), "round {n}: {}", r.text());
                }
                statuses.push(r.status);
            }
            statuses
        }
    };
    for _ in 0..3 {
        let r = round(&mut rounds).await;
        rounds.push(r);
    }
    kill();
    let killed = tokio::time::Instant::now();
    let mut saw_outage = false;
    loop {
        let r = round(&mut rounds).await;
        let down = r.contains(&StatusCode::SERVICE_UNAVAILABLE);
        rounds.push(r);
        saw_outage |= down;
        if saw_outage && !down {
            return Outage { rounds, window: killed.elapsed() };
        }
        assert!(killed.elapsed() < Duration::from_secs(30), "no recovery within 30 s: {rounds:?}");
    }
}

impl Outage {
    /// Only 200 and 503; the rounds with a 503 are one stretch (no flapping after the recovery); then three more
    /// rounds, all 200, prove the recovery holds.
    async fn assert_one_window(&self, gate: &TestGate, browsers: &[Browser]) {
        let all: Vec<StatusCode> = self.rounds.iter().flatten().copied().collect();
        assert!(all.iter().all(|s| *s == StatusCode::OK || *s == StatusCode::SERVICE_UNAVAILABLE), "{:?}", self.rounds);
        assert!(self.rounds[..3].iter().flatten().all(|s| *s == StatusCode::OK), "before the kill: {:?}", self.rounds);
        let down: Vec<usize> =
            (0..self.rounds.len()).filter(|i| self.rounds[*i].contains(&StatusCode::SERVICE_UNAVAILABLE)).collect();
        assert!(down.windows(2).all(|w| w[1] == w[0] + 1), "one outage window: {:?}", self.rounds);
        for _ in 0..3 {
            for b in browsers {
                let r = b.api().get(&format!("{}/", gate.base)).await;
                assert_eq!(r.status, StatusCode::OK, "no session lost, and service stays back: {}", r.text());
            }
        }
    }
}

#[tokio::test]
async fn sentinel_failover_under_load_answers_503_then_recovers_with_every_replicated_session() {
    let mut s = Sentinel::start().await;
    let url = s.url();
    let gate = TestGate::builder().settings(move |st| st.session.store = redis_store(&url)).spawn().await;
    let mut browsers = Vec::new();
    for user in ["ann", "ben", "cat", "dan"] {
        browsers.push(gate.login_as(user).await);
    }
    // What "Redis kept": the replica has acknowledged every write.
    replicated(&s.primary).await;
    let outage = failover_under_load(&gate, &browsers, || s.primary.kill()).await;
    eprintln!("sentinel failover: service back {:?} after the primary was killed", outage.window);
    outage.assert_one_window(&gate, &browsers).await;
    // The replica is the primary now, and every session made before the failover is still there.
    assert!(info(&s.replica, "replication").await.contains("role:master"));
    gate.login_as("eve").await;
    let admin = Browser::new().api();
    assert_eq!(admin.get(&format!("{}/readyz", gate.admin)).await.status, StatusCode::OK);
    gate.shutdown().await;
}

#[tokio::test]
async fn cluster_failover_under_load_answers_503_then_recovers_with_every_replicated_session() {
    let mut c = Cluster::start().await;
    let url = c.url();
    let gate = TestGate::builder().settings(move |st| st.session.store = redis_store(&url)).spawn().await;
    let mut browsers = Vec::new();
    for i in 0..12 {
        browsers.push(gate.login_as(&format!("user{i}")).await);
    }
    // The primary holding the most sessions is the one to lose; every primary's replica acknowledges first.
    let mut victim = (0, 0);
    for p in c.primaries().await {
        let keys: Vec<String> = c.nodes[p].conn().await.keys("idgate:s:*").await.unwrap();
        replicated(&c.nodes[p]).await;
        if keys.len() > victim.1 {
            victim = (p, keys.len());
        }
    }
    assert!(victim.1 > 0);
    let outage = failover_under_load(&gate, &browsers, || c.nodes[victim.0].kill()).await;
    eprintln!(
        "cluster failover: service back {:?} after the primary of {} of {} sessions was killed",
        outage.window,
        victim.1,
        browsers.len()
    );
    // Only the lost shard's sessions waited (the nodes run with `cluster-require-full-coverage no`, as README
    // advises): every other session was served in every round.
    for r in &outage.rounds {
        let served = r.iter().filter(|s| **s == StatusCode::OK).count();
        assert!(served >= browsers.len() - victim.1, "the other shards kept serving: {:?}", outage.rounds);
    }
    outage.assert_one_window(&gate, &browsers).await;
    assert_eq!(c.primaries().await.len(), 3, "a replica took over the shard");
    gate.login_as("zed").await;
    let admin = Browser::new().api();
    assert_eq!(admin.get(&format!("{}/readyz", gate.admin)).await.status, StatusCode::OK);
    gate.shutdown().await;
}

/// Resharding under load (the `MOVED`/`ASK` storm): the slots holding sessions move from one primary to another
/// the way `redis-cli --cluster reshard` moves them (`SETSLOT IMPORTING`/`MIGRATING`, `MIGRATE`, `SETSLOT NODE`),
/// with requests in the middle: half the keys moved (their slot still owned by the source, which answers `ASK`),
/// then all (the slot owned by the target: `MOVED`). The cluster client follows every redirect, so no request fails
/// and no session is lost.
#[tokio::test]
async fn cluster_resharding_under_load_follows_every_redirect_without_an_error() {
    let c = Cluster::start().await;
    let url = c.url();
    let gate = TestGate::builder().settings(move |st| st.session.store = redis_store(&url)).spawn().await;
    let mut browsers = Vec::new();
    for i in 0..12 {
        browsers.push(gate.login_as(&format!("re{i}")).await);
    }
    // The primary holding the most sessions gives its slots away: 12 sessions over 3 primaries put at least 4 there
    // (a fixed primary could hold fewer than two of them by chance, and the test would have nothing to split).
    let primaries = c.primaries().await;
    let mut held = Vec::new();
    for &p in &primaries {
        let keys: Vec<String> = c.nodes[p].conn().await.keys("idgate:s:*").await.unwrap();
        held.push((keys.len(), p));
    }
    held.sort();
    let (from, to) = (&c.nodes[held[held.len() - 1].1], &c.nodes[held[0].1]);
    let (mut src, mut dst) = (from.conn().await, to.conn().await);
    let moving: Vec<String> = src.keys("idgate:s:*").await.unwrap();
    assert!(moving.len() >= 4, "sessions live on the primary that gives its slots away: {moving:?}");
    let myid = |mut conn: redis::aio::MultiplexedConnection| async move {
        redis::cmd("CLUSTER").arg("MYID").query_async::<String>(&mut conn).await.unwrap()
    };
    let (from_id, to_id) = (myid(src.clone()).await, myid(dst.clone()).await);
    let mut slots = std::collections::BTreeMap::<i64, Vec<String>>::new();
    for k in &moving {
        let slot: i64 = redis::cmd("CLUSTER").arg("KEYSLOT").arg(k).query_async(&mut src).await.unwrap();
        slots.entry(slot).or_default().push(k.clone());
    }
    let setslot = |conn: &mut redis::aio::MultiplexedConnection, slot: i64, state: &str, id: &str| {
        let mut conn = conn.clone();
        let (state, id) = (state.to_owned(), id.to_owned());
        async move {
            let _: () =
                redis::cmd("CLUSTER").arg("SETSLOT").arg(slot).arg(state).arg(id).query_async(&mut conn).await.unwrap();
        }
    };
    // One MIGRATE per key: its keys must share a slot.
    let migrate = |conn: &mut redis::aio::MultiplexedConnection, keys: Vec<String>| {
        let mut conn = conn.clone();
        let port = to.port;
        async move {
            for key in keys {
                let _: () = redis::cmd("MIGRATE")
                    .arg("127.0.0.1")
                    .arg(port)
                    .arg(key)
                    .arg(0)
                    .arg(5000)
                    .arg("AUTH")
                    .arg(DATA_PASSWORD)
                    .query_async(&mut conn)
                    .await
                    .unwrap();
            }
        }
    };
    let all_served = |what: &'static str, browsers: Vec<Browser>| {
        let url = format!("{}/", gate.base);
        async move {
            for b in &browsers {
                let r = b.api().get(&url).await;
                assert_eq!(r.status, StatusCode::OK, "{what}: {}", r.text());
            }
        }
    };
    for slot in slots.keys() {
        setslot(&mut dst, *slot, "IMPORTING", &from_id).await;
        setslot(&mut src, *slot, "MIGRATING", &to_id).await;
    }
    // Half the sessions' keys moved: the source answers ASK for them, and serves the rest itself.
    let (first, rest) = moving.split_at(moving.len() / 2);
    migrate(&mut src, first.to_vec()).await;
    all_served("slots migrating, half the keys moved (ASK)", browsers.clone()).await;
    browsers.push(gate.login_as("during-migration").await);
    migrate(&mut src, rest.to_vec()).await;
    all_served("slots migrating, every key moved (ASK)", browsers.clone()).await;
    // The slots change hands: the source answers MOVED from now on.
    for slot in slots.keys() {
        for n in c.primaries().await {
            let mut conn = c.nodes[n].conn().await;
            setslot(&mut conn, *slot, "NODE", &to_id).await;
        }
    }
    all_served("slots moved (MOVED)", browsers.clone()).await;
    let left: Vec<String> = src.keys("idgate:s:*").await.unwrap();
    assert!(left.iter().all(|k| !moving.contains(k)), "the sessions moved away");
    let arrived: Vec<String> = dst.keys("idgate:s:*").await.unwrap();
    assert!(moving.iter().all(|k| arrived.contains(k)), "and arrived");
    gate.login_as("after-migration").await;
    all_served("after the resharding", browsers).await;
    gate.shutdown().await;
}

/// Redis answering slowly (`DEBUG SLEEP`): requests answer 503 after the store's timeout instead of hanging until
/// Redis answers, concurrent ones too, and service resumes when Redis does.
#[tokio::test]
async fn a_slow_redis_times_out_to_503_and_service_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port(false);
    let args = server_args(port, &["--enable-debug-command", "yes"]);
    let node = Proc::spawn("redis-server", &bin("redis-server"), port, &args, dir.path(), DATA_PASSWORD).await;
    let url = node.url();
    let gate = TestGate::builder().settings(move |st| st.session.store = redis_store(&url)).spawn().await;
    let b = gate.login_as("sid").await;
    let admin = Browser::new().api();
    // Blocks the server for 8 s, far past the store's 2 s timeout.
    let mut sleeping = tokio::process::Command::new(bin("redis-cli"))
        .env("REDISCLI_AUTH", DATA_PASSWORD)
        .args(["-p", &port.to_string(), "DEBUG", "SLEEP", "8"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (b, url) = (b.api(), format!("{}/", gate.base));
        tasks.push(tokio::spawn(async move { b.get(&url).await }));
    }
    let ready = admin.get(&format!("{}/readyz", gate.admin)).await;
    for t in tasks {
        let r = t.await.unwrap();
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text());
        assert!(r.text().contains("Sessions are unavailable"), "{}", r.text());
    }
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(ready.text().contains("timed out"), "{}", ready.text());
    assert!(sleeping.try_wait().unwrap().is_none(), "Redis was still asleep when the 503s came");
    assert!(sleeping.wait().await.unwrap().success());
    eventually("service resumes", Duration::from_secs(10), || async {
        (b.api().get(&format!("{}/", gate.base)).await.status == StatusCode::OK).then_some(())
    })
    .await;
    gate.shutdown().await;
}

/// `rediss+sentinel://` with a private CA: the sentinel and the primary speak only TLS (`port 0`, `tls-port`,
/// the sentinel reaching the primary over TLS too), and idgate — the real binary, its store on rustls/aws-lc-rs —
/// trusts the CA through `SSL_CERT_FILE` (the system roots otherwise, like every outbound connection). Without the
/// CA it is not ready, and says why.
#[tokio::test]
async fn sentinel_over_tls_trusts_a_private_ca_from_ssl_cert_file_and_refuses_without_it() {
    use idgate::{
        clock::SystemClock,
        dev_issuer::{DevAlg, DevClient, DevIssuer},
    };
    let dir = tempfile::tempdir().unwrap();
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
        .unwrap()
        .signed_by(&leaf_key, &ca, &ca_key)
        .unwrap();
    let (ca_pem, cert, key) = (dir.path().join("ca.pem"), dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::write(&ca_pem, ca.pem()).unwrap();
    std::fs::write(&cert, leaf.pem()).unwrap();
    std::fs::write(&key, leaf_key.serialize_pem()).unwrap();
    let tls = format!(
        "tls-cert-file {}\ntls-key-file {}\ntls-ca-cert-file {}\ntls-auth-clients no\ntls-replication yes\n",
        cert.display(),
        key.display(),
        ca_pem.display()
    );
    let (p, s) = (free_port(false), free_port(false));
    let primary_conf = dir.path().join("primary.conf");
    std::fs::write(
        &primary_conf,
        format!("port 0\ntls-port {p}\nbind 127.0.0.1\nsave \"\"\nrequirepass {DATA_PASSWORD}\n{tls}"),
    )
    .unwrap();
    let args = [primary_conf.display().to_string()];
    let _primary = Proc::spawn("redis primary (TLS)", &bin("redis-server"), p, &args, dir.path(), DATA_PASSWORD).await;
    let sentinel_conf = dir.path().join("sentinel.conf");
    std::fs::write(
        &sentinel_conf,
        format!(
            "port 0\ntls-port {s}\nbind 127.0.0.1\ndir {}\nsentinel monitor mymaster 127.0.0.1 {p} 1\n\
             sentinel auth-pass mymaster {DATA_PASSWORD}\n{tls}",
            dir.path().display()
        ),
    )
    .unwrap();
    let args = [sentinel_conf.display().to_string()];
    let _sentinel = Proc::spawn("redis-sentinel (TLS)", &bin("redis-sentinel"), s, &args, dir.path(), "").await;

    let gate_port = free_port(false);
    let client = DevClient {
        client_id: "c".into(),
        client_secret: "s".into(),
        redirect_uris: vec![format!("http://127.0.0.1:{gate_port}/oauth2/callback")],
        token_auth_method: idgate::config::TokenAuthMethod::ClientSecretBasic,
        post_logout_redirect_uris: vec![],
        jwks: None,
        jwks_uri: None,
    };
    let issuer =
        DevIssuer::start("127.0.0.1:0".parse().unwrap(), DevAlg::RS256, client, Arc::new(SystemClock)).await.unwrap();
    let run = |with_ca: bool| {
        let admin = free_port(false);
        let config = format!(
            "[server]\nlisten = \"127.0.0.1:{gate_port}\"\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n\
             [upstream]\nurl = \"http://127.0.0.1:1\"\n[oidc]\nissuer = \"{}\"\nclient_id = \"c\"\n\
             client_secret = \"s\"\nredirect_url = \"http://127.0.0.1:{gate_port}/oauth2/callback\"\n\
             [session]\nsecret = \"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\"\ncookie_secure = false\n\
             store = \"redis\"\nredis_url = \"rediss+sentinel://:{DATA_PASSWORD}@127.0.0.1:{s}/mymaster\"\n\
             [log]\nformat = \"text\"\nlevel = \"warn\"\n",
            issuer.issuer()
        );
        let file = dir.path().join(format!("idgate-{with_ca}.toml"));
        std::fs::write(&file, config).unwrap();
        let log = std::fs::File::create(dir.path().join(format!("idgate-{with_ca}.log"))).unwrap();
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_idgate"));
        cmd.args(["run", "--config"]).arg(&file).env_remove("SSL_CERT_DIR").kill_on_drop(true);
        cmd.stdout(Stdio::null()).stderr(log);
        if with_ca {
            cmd.env("SSL_CERT_FILE", &ca_pem);
        } else {
            cmd.env_remove("SSL_CERT_FILE");
        }
        let log = dir.path().join(format!("idgate-{with_ca}.log"));
        (cmd.spawn().unwrap(), format!("http://127.0.0.1:{admin}/readyz"), log)
    };
    let (mut child, url, log) = run(false);
    let refused = readyz(&mut child, &url, &log, "session store unavailable").await;
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(refused.text().contains("invalid peer certificate: UnknownIssuer"), "{}", refused.text());
    // Stopped and reaped before the next one binds the same public port.
    child.kill().await.unwrap();
    let (mut child, url, log) = run(true);
    let ready = readyz(&mut child, &url, &log, "ready").await;
    assert_eq!(ready.status, StatusCode::OK, "{}", ready.text());
}

/// Polls `url` (an idgate's `/readyz`) until it says `want`; an idgate that exits (a port taken meanwhile, …) fails
/// the test with its log.
async fn readyz(child: &mut tokio::process::Child, url: &str, log: &Path, want: &str) -> crate::harness::Resp {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let admin = url.trim_start_matches("http://").trim_end_matches("/readyz");
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("idgate exited ({status}): {}", std::fs::read_to_string(log).unwrap_or_default());
        }
        if tokio::net::TcpStream::connect(admin).await.is_ok() {
            let r = Browser::new().api().get(url).await;
            if r.text().contains(want) {
                return r;
            }
        }
        let log = std::fs::read_to_string(log).unwrap_or_default();
        assert!(tokio::time::Instant::now() < deadline, "/readyz never said {want:?}: {log}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
