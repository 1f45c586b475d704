//! A real nginx (Debian's package) in front of idgate's forward-auth endpoint, configured with the snippet that
//! ships in deploy/nginx/. The test fails, rather than skips, when nginx is missing: scripts/deps.sh installs it.

use std::{process::Stdio, time::Duration};

use http::StatusCode;
use idgate::config::AuthMode;

use crate::harness::{Browser, TestGate, route, spawn_json_echo};

struct Nginx {
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn nginx_binary() -> &'static str {
    ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("nginx is not installed: run scripts/deps.sh")
}

async fn start_nginx(port: u16, idgate: std::net::SocketAddr, app: std::net::SocketAddr) -> Nginx {
    let dir = tempfile::tempdir().unwrap();
    let snippet = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/nginx/idgate-locations.conf");
    let example =
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/nginx/example.conf"))
            .unwrap();
    // The shipped example, pointed at this test's addresses.
    let server = example
        .replace("server 127.0.0.1:4180;", &format!("server {idgate};"))
        .replace("server 127.0.0.1:8080;", &format!("server {app};"))
        .replace("listen 80;", &format!("listen 127.0.0.1:{port};"))
        .replace("/etc/nginx/idgate-locations.conf", snippet.to_str().unwrap());
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
        .spawn()
        .unwrap();
    let nginx = Nginx { child, _dir: dir };
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return nginx;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("nginx did not start: {}", std::fs::read_to_string(nginx._dir.path().join("error.log")).unwrap_or_default());
}

#[tokio::test]
async fn nginx_auth_request_in_front_of_idgate() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let app = spawn_json_echo().await;
    let gate = TestGate::builder()
        .settings(move |s| {
            s.server.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
            s.oidc.redirect_url = format!("http://127.0.0.1:{port}/oauth2/callback").parse().unwrap();
            let mut admin = route("/admin", AuthMode::Login);
            admin.any_of.insert("https://example.com/roles".into(), vec!["admin".into()]);
            s.routes = vec![admin];
        })
        .redirect_uri(format!("http://127.0.0.1:{port}/oauth2/callback"))
        .spawn()
        .await;
    let _nginx = start_nginx(port, gate.running.as_ref().unwrap().public_addr, app).await;
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
            &[("x-auth-request-user", "forged"), ("X_Auth_Request_User", "forged2")],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.upstream_header("x-auth-request-user").as_deref(), Some("dev|nina"));
    assert_eq!(r.upstream_header("x-auth-request-email").as_deref(), Some("nina@example.com"));
    assert!(!r.text().contains("forged"), "nginx drops underscore headers and overwrites ours: {}", r.text());
    // Route rules apply to the original URI nginx reports.
    let denied = b.get(&format!("{front}/admin/x")).await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN);
    gate.shutdown().await;
}
