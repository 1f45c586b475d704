//! The real binary: exit codes, `check`, `gen-secret`, and `run` streaming large bodies through a real upstream
//! without the proxy's memory growing with them.

use std::{
    convert::Infallible,
    io::Write,
    process::{Command, Stdio},
    sync::Arc,
    time::Duration,
};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::TokioIo;
use idgate::{
    clock::SystemClock,
    dev_issuer::{DevAlg, DevClient, DevIssuer},
};

use crate::harness::{eventually, until_listening};

const BIN: &str = env!("CARGO_BIN_EXE_idgate");
const MIB: usize = 1024 * 1024;

fn config_file(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    f.write_all(text.as_bytes()).unwrap();
    f
}

#[test]
fn gen_secret_prints_32_random_bytes() {
    let a = Command::new(BIN).arg("gen-secret").output().unwrap();
    let b = Command::new(BIN).arg("gen-secret").output().unwrap();
    assert!(a.status.success());
    let text = String::from_utf8(a.stdout).unwrap();
    use base64::Engine;
    assert_eq!(base64::engine::general_purpose::STANDARD.decode(text.trim()).unwrap().len(), 32);
    assert_ne!(text, String::from_utf8(b.stdout).unwrap());
}

#[test]
fn help_explains_each_command() {
    for cmd in ["run", "check", "demo", "gen-secret"] {
        let out = Command::new(BIN).args([cmd, "--help"]).output().unwrap();
        assert!(out.status.success(), "{cmd} --help");
        assert!(String::from_utf8_lossy(&out.stdout).len() > 40);
    }
}

#[test]
fn bad_configuration_exits_2_naming_every_key() {
    let f = config_file(
        "[server]\nlisten = \"nope\"\n[oidc]\nissuer = \"not a url\"\nredirect_url = \"https://a.example.com/cb\"\nclient_id = \"c\"\n[session]\nsecret = \"x\"\n[upstream]\nurl = \"http://127.0.0.1:1\"\n[typo]\n",
    );
    let out = Command::new(BIN).args(["check", "--config"]).arg(f.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("typo"), "{err}");
    assert!(!err.contains("panicked") && !err.contains("backtrace"));
    let f = config_file(
        "[server]\nlisten = \"nope\"\n[oidc]\nissuer = \"not a url\"\nredirect_url = \"https://a.example.com/cb\"\nclient_id = \"c\"\n[session]\nsecret = \"x\"\n[upstream]\nurl = \"http://127.0.0.1:1\"\n",
    );
    let out = Command::new(BIN).args(["run", "--config"]).arg(f.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    for key in ["server.listen", "oidc.issuer", "session.secret"] {
        assert!(err.contains(key), "{key} not named: {err}");
    }
    let out = Command::new(BIN).args(["run"]).env_remove("IDGATE_CONFIG").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = Command::new(BIN).args(["run", "--config", "/nonexistent.toml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent.toml"));
}

/// Starts `idgate run --config FILE`, killed when dropped.
fn spawn_run(config: &std::path::Path, stdout: Stdio) -> tokio::process::Child {
    tokio::process::Command::new(BIN)
        .args(["run", "--config"])
        .arg(config)
        .stdout(stdout)
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

/// Collects the lines `stdout` prints, from now on, into a shared list.
fn collect_lines(stdout: tokio::process::ChildStdout) -> Arc<std::sync::Mutex<Vec<String>>> {
    use tokio::io::AsyncBufReadExt;
    let collected: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let sink = Arc::clone(&collected);
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    tokio::spawn(async move {
        while let Ok(Some(l)) = lines.next_line().await {
            sink.lock().unwrap().push(l);
        }
    });
    collected
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn gate_config(port: u16, admin: u16, issuer: &str, upstream: std::net::SocketAddr) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n[upstream]\nurl = \"http://{upstream}\"\n\
         [oidc]\nissuer = \"{issuer}\"\nclient_id = \"c\"\nclient_secret = \"s\"\nredirect_url = \"http://127.0.0.1:{port}/oauth2/callback\"\n\
         [session]\nsecret = \"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\"\ncookie_secure = false\n\
         [[routes]]\nprefix = \"/stream\"\nauth = \"public\"\n[log]\nformat = \"text\"\nlevel = \"warn\"\n"
    )
}

async fn issuer(port: u16) -> DevIssuer {
    let client = DevClient {
        client_id: "c".into(),
        client_secret: "s".into(),
        redirect_uris: vec![format!("http://127.0.0.1:{port}/oauth2/callback")],
        token_auth_method: idgate::config::TokenAuthMethod::ClientSecretBasic,
        post_logout_redirect_uris: vec![],
        jwks: None,
        jwks_uri: None,
    };
    DevIssuer::start("127.0.0.1:0".parse().unwrap(), DevAlg::RS256, client, Arc::new(SystemClock)).await.unwrap()
}

#[tokio::test]
async fn check_reports_a_usable_deployment() {
    let port = free_port();
    let iss = issuer(port).await;
    let f = config_file(&gate_config(port, free_port(), iss.issuer(), "127.0.0.1:1".parse().unwrap()));
    let out = tokio::process::Command::new(BIN).args(["check", "--config"]).arg(f.path()).output().await.unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("issuer matches") && text.contains("configuration OK"), "{text}");
    iss.stop();
    // An issuer that does not answer: exit 1 and say so.
    let f = config_file(&gate_config(port, free_port(), "http://127.0.0.1:1", "127.0.0.1:1".parse().unwrap()));
    let out = tokio::process::Command::new(BIN).args(["check", "--config"]).arg(f.path()).output().await.unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("ERROR issuer"));
}

/// An upstream that counts uploaded bytes and streams downloads generated on the fly.
async fn streaming_upstream() -> std::net::SocketAddr {
    crate::harness::spawn_upstream(|req: Request<hyper::body::Incoming>| async move {
        if req.uri().path() == "/stream/download" {
            return Response::new(StreamBody::new(generated_stream(100 * MIB)).boxed());
        }
        let mut body = req.into_body();
        let mut n = 0usize;
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.map(|f| f.into_data()) {
                n += data.map(|d| d.len()).unwrap_or(0);
            }
        }
        Response::new(Full::new(Bytes::from(n.to_string())).map_err(|never| match never {}).boxed())
    })
    .await
}

/// A stream of `total` bytes in 64 KiB frames, produced lazily.
fn generated_stream(total: usize) -> impl generated::Stream<Item = Result<Frame<Bytes>, Infallible>> + Send + 'static {
    generated::Chunks { left: total, chunk: Bytes::from(vec![b'x'; 64 * 1024]) }
}

mod generated {
    use super::*;
    pub use futures_core::Stream;

    pub struct Chunks {
        pub left: usize,
        pub chunk: Bytes,
    }

    impl Stream for Chunks {
        type Item = Result<Frame<Bytes>, Infallible>;
        fn poll_next(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Self::Item>> {
            if self.left == 0 {
                return std::task::Poll::Ready(None);
            }
            let n = self.left.min(self.chunk.len());
            self.left -= n;
            std::task::Poll::Ready(Some(Ok(Frame::data(self.chunk.slice(..n)))))
        }
    }
}

fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[tokio::test]
async fn run_streams_100_mib_each_way_without_growing() {
    let port = free_port();
    let admin = free_port();
    let iss = issuer(port).await;
    let upstream = streaming_upstream().await;
    let f = config_file(&gate_config(port, admin, iss.issuer(), upstream));
    let mut child = spawn_run(f.path(), Stdio::null());
    let pid = child.id().unwrap();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::combinators::BoxBody<Bytes, Infallible>>();
    let ready = format!("http://127.0.0.1:{admin}/readyz");
    eventually("idgate run is ready", Duration::from_secs(10), || async {
        let req = Request::get(&ready).body(Full::new(Bytes::new()).boxed()).unwrap();
        client.request(req).await.ok().filter(|r| r.status() == StatusCode::OK).map(|_| ())
    })
    .await;
    let baseline = peak_rss_kib(pid);

    let upload = Request::post(format!("http://127.0.0.1:{port}/stream/upload"))
        .body(StreamBody::new(generated_stream(100 * MIB)).boxed())
        .unwrap();
    let resp = client.request(upload).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let counted = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(std::str::from_utf8(&counted).unwrap(), (100 * MIB).to_string());

    let download =
        Request::get(format!("http://127.0.0.1:{port}/stream/download")).body(Full::new(Bytes::new()).boxed()).unwrap();
    let resp = client.request(download).await.unwrap();
    let mut body = resp.into_body();
    let mut n = 0;
    while let Some(frame) = body.frame().await {
        n += frame.unwrap().into_data().map(|d| d.len()).unwrap_or(0);
    }
    assert_eq!(n, 100 * MIB);
    let peak = peak_rss_kib(pid);
    assert!(peak < baseline + 32 * 1024, "peak RSS grew from {baseline} KiB to {peak} KiB while streaming 200 MiB");
    child.kill().await.unwrap();
    iss.stop();
}

#[tokio::test]
async fn sighup_reloads_routes_without_dropping_connections_and_refuses_bad_config() {
    let port = free_port();
    let admin = free_port();
    let iss = issuer(port).await;
    let upstream = crate::harness::spawn_json_echo().await;
    let f = config_file(&gate_config(port, admin, iss.issuer(), upstream));
    let mut child = spawn_run(f.path(), Stdio::piped());
    let logs = collect_lines(child.stdout.take().unwrap());
    let pid = child.id().unwrap();
    until_listening("idgate run", ([127, 0, 0, 1], port).into()).await;
    // One keep-alive connection, used before and after the reload.
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let (mut conn, driver) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(driver);
    let get = |path: &str| Request::get(path).header("host", "x").body(Full::new(Bytes::new())).unwrap();
    assert_eq!(conn.send_request(get("/stream/a")).await.unwrap().status(), StatusCode::OK);
    assert_eq!(conn.send_request(get("/private")).await.unwrap().status(), StatusCode::UNAUTHORIZED);

    let reloaded = format!(
        "{}\n[[routes]]\nprefix = \"/private\"\nauth = \"public\"\n",
        gate_config(port, admin, iss.issuer(), upstream)
    );
    std::fs::write(f.path(), reloaded).unwrap();
    let hup = || Command::new("kill").args(["-HUP", &pid.to_string()]).status().unwrap();
    assert!(hup().success());
    eventually("the new route applies after SIGHUP", Duration::from_secs(5), || {
        let status = conn.send_request(get("/private"));
        async move { (status.await.expect("the connection survives the reload").status() == StatusCode::OK).then_some(()) }
    })
    .await;

    std::fs::write(f.path(), "[server]\nlisten = \"broken\"\n").unwrap();
    assert!(hup().success());
    let refused = eventually("the bad reload is refused", Duration::from_secs(5), || async {
        logs.lock().unwrap().iter().find(|l| l.contains("reload refused")).cloned()
    })
    .await;
    assert!(refused.contains("server.listen"), "the refusal names the key: {refused}");
    assert!(child.try_wait().unwrap().is_none(), "a bad reload does not stop idgate");
    assert_eq!(
        conn.send_request(get("/private")).await.unwrap().status(),
        StatusCode::OK,
        "the old configuration keeps serving"
    );
    child.kill().await.unwrap();
    iss.stop();
}

/// `idgate run` with JSON lines at `info` (request lines on) on free ports, and the lines it prints.
struct JsonLogged {
    port: u16,
    admin: u16,
    iss: DevIssuer,
    child: tokio::process::Child,
    lines: Arc<std::sync::Mutex<Vec<String>>>,
    _config: tempfile::NamedTempFile,
}

async fn run_json_logged() -> JsonLogged {
    let port = free_port();
    let admin = free_port();
    let iss = issuer(port).await;
    let upstream = crate::harness::spawn_json_echo().await;
    let text = gate_config(port, admin, iss.issuer(), upstream)
        .replace("format = \"text\"\nlevel = \"warn\"", "format = \"json\"\nlevel = \"info\"");
    let config = config_file(&text);
    let mut child = spawn_run(config.path(), Stdio::piped());
    let lines = collect_lines(child.stdout.take().unwrap());
    JsonLogged { port, admin, iss, child, lines, _config: config }
}

#[tokio::test]
async fn audit_lines_name_the_user_and_never_a_token() {
    let JsonLogged { port, admin, iss, mut child, lines: collected, _config } = run_json_logged().await;
    let base = format!("http://127.0.0.1:{port}");
    until_listening("idgate's admin listener", ([127, 0, 0, 1], admin).into()).await;
    let admin_client = crate::harness::Browser::new().api();
    eventually("idgate run is ready", Duration::from_secs(10), || async {
        let ready = admin_client.get(&format!("http://127.0.0.1:{admin}/readyz")).await;
        (ready.status == StatusCode::OK).then_some(())
    })
    .await;
    let b = crate::harness::Browser::new();
    let page = b.login(&base, "/page", "Audrey").await;
    assert_eq!(page.status, StatusCode::OK);
    let metrics = crate::harness::Browser::new().api().get(&format!("http://127.0.0.1:{admin}/metrics")).await.text();
    assert!(metrics.contains("idgate_logins_total{result=\"success\"} 1"), "{metrics}");
    // A failed login is counted by reason.
    let r = crate::harness::Browser::new()
        .get(&format!("{base}/oauth2/callback?code=x&state=AAAAAAAAAAAAAAAAAAAAAA"))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let metrics = crate::harness::Browser::new().api().get(&format!("http://127.0.0.1:{admin}/metrics")).await.text();
    assert!(metrics.contains("idgate_logins_total{result=\"unknown_state\"} 1"), "{metrics}");
    // The request lines are written after the answers: wait until the last one (the metrics scrape is on the
    // admin listener, which logs none) is in.
    let logs = eventually("the failed callback's request line is logged", Duration::from_secs(5), || async {
        let logs = collected.lock().unwrap().clone();
        logs.iter()
            .any(|l| l.contains("\"message\":\"request\"") && l.contains("/oauth2/callback") && l.contains("400"))
            .then_some(logs)
    })
    .await;
    let audit: Vec<serde_json::Value> = logs
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|v: &serde_json::Value| v["target"] == "idgate::audit")
        .collect();
    assert!(
        audit.iter().any(|v| v["event"] == "login"
            && v["sub"] == "dev|audrey"
            && v["session"].as_str().is_some_and(|s| s.len() == 16)),
        "{logs:#?}"
    );
    let requests = logs.iter().filter(|l| l.contains("\"message\":\"request\"")).count();
    assert!(requests >= 5, "one line per request");
    assert!(!logs.iter().any(|l| crate::harness::contains_jwt(l)), "no token in any log line");
    let cookie = b.cookie("idgate").unwrap();
    assert!(!logs.iter().any(|l| l.contains(&cookie)), "no cookie in any log line");
    child.kill().await.unwrap();
    iss.stop();
}

/// The request lines are buffered off the request path (telemetry::access_log); a SIGTERM right after the last
/// answer still leaves one line per request in the output, each a JSON object with the request's fields.
#[tokio::test]
async fn every_request_line_is_written_before_a_terminated_process_exits() {
    let JsonLogged { port, iss, mut child, lines: collected, _config, .. } = run_json_logged().await;
    until_listening("idgate's public listener", ([127, 0, 0, 1], port).into()).await;
    let b = crate::harness::Browser::new().api();
    const N: usize = 200;
    for i in 0..N {
        let r = b.get(&format!("http://127.0.0.1:{port}/stream/{i}?secret=q{i}")).await;
        assert_eq!(r.status, StatusCode::OK);
    }
    let pid = child.id().unwrap();
    assert!(Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap().success());
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "{status:?}");
    // The reader task may still hold the last lines: wait for the end of the stream ("stopped" is the last line).
    let logs = eventually("the output ends", Duration::from_secs(5), || async {
        let logs = collected.lock().unwrap().clone();
        logs.iter().any(|l| l.contains("\"stopped\"")).then_some(logs)
    })
    .await;
    let lines: Vec<serde_json::Value> = logs
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["message"] == "request")
        .collect();
    let paths: std::collections::BTreeSet<String> =
        lines.iter().map(|v| v["path"].as_str().unwrap().to_owned()).collect();
    assert_eq!(lines.len(), N, "one line per request, none lost");
    assert_eq!(paths.len(), N);
    assert!(paths.contains("/stream/0") && paths.contains(&format!("/stream/{}", N - 1)));
    let v = &lines[0];
    assert_eq!(
        (v["method"].as_str(), v["status"].as_u64(), v["target"].as_str()),
        (Some("GET"), Some(200), Some("idgate::access"))
    );
    assert!(v["latency_us"].is_u64() && v["request_id"].as_str().is_some_and(|id| id.len() == 16), "{v}");
    assert!(!logs.iter().any(|l| l.contains("secret=q")), "the query is never logged");
    let stopped = logs.iter().position(|l| l.contains("\"stopped\"")).unwrap();
    let last_request = logs.iter().rposition(|l| l.contains("\"message\":\"request\"")).unwrap();
    assert!(last_request < stopped, "the lines are flushed before the process says it stopped");
    iss.stop();
}
