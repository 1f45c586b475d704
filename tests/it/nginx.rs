//! A real nginx (Debian's package) in front of idgate's forward-auth endpoint: configured with the snippet that
//! ships in deploy/nginx/, and with the auth location ingress-nginx generates for deploy/kubernetes/
//! ingress-nginx.yaml. The tests fail, rather than skip, when nginx is missing: scripts/deps.sh installs it.

use std::{
    net::SocketAddr,
    path::Path,
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use idgate::config::AuthMode;
use yaml_rust2::YamlLoader;

use crate::harness::{Browser, TestGate, route, spawn_json_echo, spawn_upstream, until_listening};

/// A running nginx master (and its workers, in the master's own process group). Dropping it stops nginx the way
/// an operator would (SIGTERM to the master, which stops its workers first) and waits for the whole group.
pub(crate) struct Nginx {
    child: std::process::Child,
    dir: tempfile::TempDir,
}

impl Nginx {
    /// The process group of the master and its workers.
    fn group(&self) -> u32 {
        self.child.id()
    }

    fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let signal = |sig: &str, target: &str| {
            let _ = std::process::Command::new("kill").args([sig, "--", target]).stderr(Stdio::null()).status();
        };
        let master = self.child.id().to_string();
        signal("-TERM", &master);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) && group_members(self.group()).is_empty() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        // Only if nginx ignored SIGTERM: the group still exists, so this reaches its workers and nothing else.
        signal("-KILL", &format!("-{}", self.group()));
        let _ = self.child.wait();
    }
}

/// Live processes in process group `pgid` (from /proc; zombies count as gone).
fn group_members(pgid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // pid (comm) state ppid pgrp …; comm may hold spaces, so split after its closing parenthesis.
            let fields: Vec<&str> =
                stat.rsplit_once(')').map(|(_, r)| r.split_whitespace().collect()).unwrap_or_default();
            fields.len() > 2 && fields[0] != "Z" && fields[2] == pgid.to_string()
        })
        .collect()
}

fn nginx_binary() -> &'static str {
    ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("nginx is not installed: run scripts/deps.sh")
}

fn repo(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// Starts nginx with `server` (one or more `server`/`upstream` blocks) inside a minimal `http` block, listening on
/// `port`, in its own process group; returns once it accepts connections.
pub(crate) async fn start_nginx(port: u16, server: &str) -> Nginx {
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let conf = format!(
        "daemon off;\nworker_processes 1;\nerror_log {d}/error.log warn;\npid {d}/nginx.pid;\nevents {{ worker_connections 256; }}\n\
         http {{\naccess_log off;\nclient_body_temp_path {d}/body;\nproxy_temp_path {d}/proxy;\nfastcgi_temp_path {d}/fastcgi;\n\
         uwsgi_temp_path {d}/uwsgi;\nscgi_temp_path {d}/scgi;\n{server}\n}}\n"
    );
    let path = dir.path().join("nginx.conf");
    std::fs::write(&path, conf).unwrap();
    let child = std::process::Command::new(nginx_binary())
        .args(["-p", dir.path().to_str().unwrap(), "-c", path.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .process_group(0)
        .spawn()
        .unwrap();
    let nginx = Nginx { child, dir };
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let up = tokio::time::timeout(Duration::from_secs(10), until_listening("nginx", addr)).await;
    assert!(up.is_ok(), "nginx did not start: {}", nginx.error_log());
    nginx
}

/// Stops nginx and checks that no process of it is left (a SIGKILL of the master alone used to leave its worker).
fn stop_and_check_nothing_is_left(nginx: Nginx) {
    let group = nginx.group();
    drop(nginx);
    assert_eq!(group_members(group), Vec::<u32>::new(), "nginx processes left after stopping");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// idgate behind nginx on `port` (trusting it, its callback on nginx's address), with an admin-only `/admin` route
/// before `more`.
async fn gate_behind_nginx(port: u16, more: Vec<idgate::config::settings::RouteSettings>) -> TestGate {
    TestGate::builder()
        .settings(move |s| {
            s.server.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
            s.oidc.redirect_url = format!("http://127.0.0.1:{port}/oauth2/callback").parse().unwrap();
            let mut admin = route("/admin", AuthMode::Login);
            admin.any_of.insert("https://example.com/roles".into(), vec!["admin".into()]);
            s.routes = std::iter::once(admin).chain(more).collect();
        })
        .redirect_uri(format!("http://127.0.0.1:{port}/oauth2/callback"))
        .spawn()
        .await
}

#[tokio::test]
async fn nginx_auth_request_in_front_of_idgate() {
    let port = free_port();
    let app = spawn_json_echo().await;
    let gate = gate_behind_nginx(port, vec![]).await;
    let idgate = gate.running.as_ref().unwrap().public_addr;
    let snippet = repo("deploy/nginx/idgate-locations.conf");
    // The shipped example, pointed at this test's addresses.
    let server = std::fs::read_to_string(repo("deploy/nginx/example.conf"))
        .unwrap()
        .replace("server 127.0.0.1:4180;", &format!("server {idgate};"))
        .replace("server 127.0.0.1:8080;", &format!("server {app};"))
        .replace("listen 80;", &format!("listen 127.0.0.1:{port};"))
        .replace("/etc/nginx/idgate-locations.conf", snippet.to_str().unwrap());
    let nginx = start_nginx(port, &server).await;
    let front = format!("http://127.0.0.1:{port}");

    let b = Browser::new();
    let r = b.get_with(&format!("{front}/app/page"), &[("x-auth-request-user", "forged")]).await;
    assert_eq!(r.status, StatusCode::FOUND);
    assert!(r.location().ends_with("/oauth2/start?rd=/app/page"), "{}", r.location());
    let page = b.login(&front, "/app/page", "Nina").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text());
    let r = b
        .get_with(
            &format!("{front}/app/page"),
            &[
                ("x-auth-request-user", "forged"),
                ("X_Auth_Request_User", "forged2"),
                ("x-auth-request-preferred-username", "forged3"),
                ("x-forwarded-user", "forged4"),
                ("remote-user", "forged5"),
                ("x-forwarded-access-token", "forged6"),
                ("x-original-uri", "/forged7"),
                ("x-auth-request-roles", "forged8"),
                ("x-idgate-assertion", "forged9"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.upstream_header("x-auth-request-user").as_deref(), Some("dev|nina"));
    assert_eq!(r.upstream_header("x-auth-request-email").as_deref(), Some("nina@example.com"));
    assert!(!r.text().contains("forged"), "nginx drops underscore headers and overwrites ours: {}", r.text());
    // idgate's sealed session stays between the browser, nginx and idgate; the app's own cookies pass.
    b.set_cookie("app_pref", "dark");
    let r = b.get(&format!("{front}/app/page")).await;
    let cookie = r.upstream_header("cookie").unwrap_or_default();
    assert_eq!(cookie, "app_pref=dark", "{}", r.text());
    // Route rules apply to the original URI nginx reports.
    let denied = b.get(&format!("{front}/admin/x")).await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN);
    stop_and_check_nothing_is_left(nginx);
    gate.shutdown().await;
}

/// What idgate answered one forward-auth call, as seen between nginx and idgate.
#[derive(Debug, Clone)]
struct Answer {
    original_url: String,
    status: StatusCode,
    body: String,
}

/// A recording hop between nginx and idgate: passes each request on unchanged and keeps idgate's answers, so the
/// tests can assert why idgate decided (nginx's `auth_request` shows the client the status only).
async fn spawn_tap(idgate: SocketAddr) -> (SocketAddr, Arc<Mutex<Vec<Answer>>>) {
    let seen: Arc<Mutex<Vec<Answer>>> = Arc::default();
    let log = Arc::clone(&seen);
    let client =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http::<Full<Bytes>>();
    let addr = spawn_upstream(move |req: Request<hyper::body::Incoming>| {
        let (client, log) = (client.clone(), Arc::clone(&log));
        async move {
            let (mut parts, _) = req.into_parts();
            let original_url =
                parts.headers.get("x-original-url").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
            let path = parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
            parts.uri = format!("http://{idgate}{path}").parse().unwrap();
            let resp = client.request(Request::from_parts(parts, Full::new(Bytes::new()))).await.unwrap();
            let (parts, body) = resp.into_parts();
            let body = body.collect().await.unwrap().to_bytes();
            log.lock().unwrap().push(Answer {
                original_url,
                status: parts.status,
                body: String::from_utf8_lossy(&body).into_owned(),
            });
            http::Response::from_parts(parts, Full::new(body))
        }
    })
    .await;
    (addr, seen)
}

/// The auth location ingress-nginx (controller v1.x, `nginx.tmpl`) generates for an Ingress with `auth-url`,
/// `auth-signin`, `auth-response-headers` and `auth-proxy-set-headers`, read from the shipped manifest: an internal
/// location that passes the client's headers (`proxy_pass_request_headers on`), names the original request in
/// `X-Original-URL` / `X-Original-Method`, and then sets the headers of the ConfigMap the manifest names.
fn ingress_nginx_server(port: u16, idgate: SocketAddr, tap: SocketAddr, app: SocketAddr) -> String {
    let docs =
        YamlLoader::load_from_str(&std::fs::read_to_string(repo("deploy/kubernetes/ingress-nginx.yaml")).unwrap())
            .unwrap();
    let ingress = docs
        .iter()
        .find(|d| d["kind"].as_str() == Some("Ingress") && d["metadata"]["name"].as_str() == Some("my-app"))
        .expect("the application's Ingress");
    let annotation = |name: &str| {
        ingress["metadata"]["annotations"][format!("nginx.ingress.kubernetes.io/{name}").as_str()].as_str()
    };
    let auth_url = url::Url::parse(annotation("auth-url").expect("auth-url")).unwrap();
    assert_eq!(auth_url.path(), "/oauth2/auth");
    let set_headers_ref = annotation("auth-proxy-set-headers").expect("auth-proxy-set-headers names a ConfigMap");
    let (namespace, name) = set_headers_ref.split_once('/').expect("namespace/name");
    let config_map = docs
        .iter()
        .find(|d| {
            d["kind"].as_str() == Some("ConfigMap")
                && d["metadata"]["name"].as_str() == Some(name)
                && d["metadata"]["namespace"].as_str() == Some(namespace)
        })
        .expect("the ConfigMap auth-proxy-set-headers names is in the manifest");
    // ingress-nginx renders each entry as `proxy_set_header KEY "VALUE";` (buildAuthProxySetHeaders).
    let set_headers: String = config_map["data"]
        .as_hash()
        .unwrap()
        .iter()
        .map(|(k, v)| format!("        proxy_set_header {} \"{}\";\n", k.as_str().unwrap(), v.as_str().unwrap()))
        .collect();
    // auth_request_set/proxy_set_header per auth-response-headers entry (buildAuthResponseHeaders).
    let response_headers: String = annotation("auth-response-headers")
        .unwrap()
        .split(',')
        .enumerate()
        .map(|(i, h)| {
            let var = h.trim().to_ascii_lowercase().replace('-', "_");
            format!(
                "        auth_request_set $authHeader{i} $upstream_http_{var};\n        proxy_set_header '{}' $authHeader{i};\n",
                h.trim()
            )
        })
        .collect();
    format!(
        r#"
upstream upstream_balancer {{ server {app}; }}
upstream idgate_gateway {{ server {idgate}; }}
server {{
    listen 127.0.0.1:{port};
    location = /_external-auth-Lw-Prefix {{
        internal;
        proxy_pass_request_body     off;
        proxy_set_header            Content-Length          "";
        proxy_set_header            X-Forwarded-Proto       "";
        proxy_set_header            X-Request-ID            $request_id;
        proxy_set_header            Host                    {auth_host};
        proxy_set_header            X-Original-URL          $scheme://$http_host$request_uri;
        proxy_set_header            X-Original-Method       $request_method;
        proxy_set_header            X-Sent-From             "nginx-ingress-controller";
        proxy_set_header            X-Real-IP               $remote_addr;
        proxy_set_header            X-Forwarded-For         $remote_addr;
        proxy_set_header            X-Auth-Request-Redirect $request_uri;
        proxy_buffering             off;
        proxy_ssl_server_name       on;
        proxy_pass_request_headers  on;
        client_max_body_size        1m;
        proxy_http_version          1.1;
{set_headers}        proxy_pass http://{tap}/oauth2/auth;
    }}
    location @idgate_signin {{
        internal;
        return 302 /oauth2/start?rd=$request_uri;
    }}
    # The second Ingress of the manifest: idgate's own endpoints.
    location /oauth2/ {{
        proxy_set_header Host $http_host;
        proxy_set_header X-Forwarded-For $remote_addr;
        proxy_set_header X-Forwarded-Proto $scheme;
        proxy_pass http://idgate_gateway;
    }}
    location / {{
        auth_request        /_external-auth-Lw-Prefix;
        auth_request_set    $auth_cookie $upstream_http_set_cookie;
        add_header          Set-Cookie $auth_cookie;
{response_headers}        error_page 401 = @idgate_signin;
        proxy_set_header Host $http_host;
        proxy_set_header X-Forwarded-For $remote_addr;
        proxy_pass http://upstream_balancer;
    }}
}}
"#,
        auth_host = auth_url.host_str().unwrap(),
    )
}

/// Issue 12 §2: ingress-nginx names the original request in `X-Original-URL`, and its auth location passes the
/// client's own headers through, so the shipped manifest must clear the URI headers a client could choose
/// (`X-Forwarded-Uri`, `X-Original-URI`, `X-Forwarded-Method`). Behind the generated location: a user without the
/// role gets 403 for /admin whatever URI headers they send, and ordinary paths pass (even when the client sends a
/// URI header of its own).
#[tokio::test]
async fn ingress_nginx_generated_auth_location_decides_on_the_original_url() {
    let port = free_port();
    let app = spawn_json_echo().await;
    let gate = gate_behind_nginx(port, vec![route("/public", AuthMode::Public)]).await;
    let idgate = gate.running.as_ref().unwrap().public_addr;
    let (tap, answers) = spawn_tap(idgate).await;
    let nginx = start_nginx(port, &ingress_nginx_server(port, idgate, tap, app)).await;
    let front = format!("http://127.0.0.1:{port}");
    let last = || answers.lock().unwrap().last().cloned().expect("idgate was asked");

    let anonymous = Browser::new();
    let r = anonymous.get(&format!("{front}/public/page")).await;
    assert_eq!(r.status, StatusCode::OK, "a public route passes without a session: {:?}", last());
    let b = Browser::new();
    let page = b.login(&front, "/app/page", "Nina").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text());
    assert_eq!(page.upstream_header("x-auth-request-user").as_deref(), Some("dev|nina"));

    let spoofs: [&[(&str, &str)]; 5] = [
        &[],
        &[("x-forwarded-uri", "/public")],
        &[("x-original-uri", "/public")],
        &[("x-forwarded-uri", "/public"), ("x-original-uri", "/public"), ("x-forwarded-method", "GET")],
        &[("x-original-url", "http://127.0.0.1/public"), ("x-original-method", "GET")],
    ];
    for spoof in spoofs {
        let denied = b.get_with(&format!("{front}/admin/x"), spoof).await;
        assert_eq!(denied.status, StatusCode::FORBIDDEN, "{spoof:?}: {:?}", last());
        let answer = last();
        assert_eq!(answer.original_url, format!("{front}/admin/x"), "{spoof:?}");
        assert_eq!(answer.status, StatusCode::FORBIDDEN);
        assert!(answer.body.contains("Access to /admin requires"), "{spoof:?}: denied by the route rule: {answer:?}");
        // An allowed path is unaffected by what the client sends: the URI headers never reach idgate.
        let ok = b.get_with(&format!("{front}/app/page"), spoof).await;
        assert_eq!(ok.status, StatusCode::OK, "{spoof:?}: {:?}", last());
        assert_eq!(ok.upstream_header("x-auth-request-user").as_deref(), Some("dev|nina"));
    }
    let forged: Vec<Answer> =
        answers.lock().unwrap().iter().filter(|a| !a.original_url.starts_with(&front)).cloned().collect();
    assert!(forged.is_empty(), "X-Original-URL is always nginx's own: {forged:?}");
    stop_and_check_nothing_is_left(nginx);
    gate.shutdown().await;
}
