//! The differential path suite (issue 12 §1): the path idgate decides on and the path the application acts on
//! must be the same path under every common reading. Real frameworks — werkzeug/Flask (Debian's python3-flask),
//! Koa with @koa/router and Express (npm, tests/differential/package-lock.json) and Tomcat 10 (Debian's
//! tomcat10-common) — each serve an admin, a public and a catch-all handler (tests/differential/) that answer
//! `DIFF-<HANDLER> <framework> path=<what the router matched>`; so does Caddy (Debian's) as an application server
//! (Go's net/http reading, path matchers on the cleaned path). They sit behind idgate on five chains:
//! idgate as the proxy (directly, behind nginx, behind Caddy) and idgate as forward-auth (nginx `auth_request` with
//! the shipped deploy/nginx/ files, Caddy `forward_auth`), where the proxy sends the client's raw request on.
//!
//! idgate's rules: `/public` public, `/admin` and `/kiosk` need the `admin` role, everything else a login. For a corpus of
//! confusing request targets, neither an anonymous client nor a user without the role may ever reach an admin
//! handler; ordinary paths still work. Every framework and proxy is started by the test on loopback; a missing one
//! fails the test (scripts/deps.sh installs them), it is never skipped.

use std::{
    fmt::Write as _,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use idgate::config::AuthMode;
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::TcpStream,
    process::{Child, Command},
};

use crate::harness::{Browser, TestGate, route};

/// Request targets that must never reach an admin handler without the admin role.
const CORPUS: &[&str] = &[
    // The three reproductions of issue 12.
    "/admin/..%2fpublic/x",
    "/ADMIN/x",
    "/public/..;/admin/x",
    // Encoded and double-encoded slashes.
    "/admin%2fx",
    "/admin%2Fx",
    "/public/..%2fadmin/x",
    "/public/..%2Fadmin/x",
    "/public%2f..%2fadmin/x",
    "/public/..%2f..%2fadmin/x",
    "/admin%252fx",
    "/public/..%252fadmin/x",
    "/public/%252e%252e/admin/x",
    // Backslashes, raw and encoded.
    "/admin\\x",
    "/public/..\\admin/x",
    "/public\\..\\admin\\x",
    "/admin%5cx",
    "/public/..%5cadmin/x",
    "/public/..%5Cadmin/x",
    "/public/..%255cadmin/x",
    "/public/..%5c..%5cadmin/x",
    // Servlet path parameters.
    "/public;/../admin/x",
    "/public;x=1/../admin/x",
    "/public/..;foo=bar/admin/x",
    "/public/x/..;/..;/admin/x",
    "/public/%2e%2e;/admin/x",
    "/public/..%3b/admin/x",
    "/public/..%3B/admin/x",
    "/admin;jsessionid=x/x",
    "/admin;jsessionid=x",
    "/admin/x;jsessionid=x",
    "/admin;/x",
    "/public/.;/../admin/x",
    // Dot segments, literal and encoded.
    "/public/../admin/x",
    "/public/./../admin/x",
    "/public/x/../../admin/x",
    "/public/%2e%2e/admin/x",
    "/public/%2e%2e/admin",
    "/public/%2E%2E/admin/x",
    "/public/.%2e/admin/x",
    "/public/%2e./admin/x",
    "/public/%2e/../admin/x",
    "/admin/./x",
    "/./admin/x",
    "/admin/../admin/x",
    "/public/../../admin/x",
    // Duplicate slashes (merged or not, with dot segments after them).
    "//admin/x",
    "///admin/x",
    "/admin//x",
    "/public//../admin/x",
    "/public/x//../../admin/x",
    "//public/..;/admin/x",
    // Case (case-insensitive routers) and escapes of unreserved characters.
    "/Admin/x",
    "/aDmIn/x",
    "/ADMIN",
    "/ADMIN/",
    "/public/../ADMIN/x",
    "/PUBLIC/../admin/x",
    "/PUBLIC/..;/admin/x",
    "/public/..;/ADMIN/x",
    "/%61dmin/x",
    "/%41DMIN/x",
    "/adm%69n/x",
    "/adm%C4%B1n/x",
    // Unicode case mapping: U+0130 (İ) lowercases to ASCII `i` (Go's strings.ToLower, so Caddy's path matcher).
    "/adm%C4%B0n/x",
    "/ADM%C4%B0N/x",
    "/public/../adm%C4%B0n/x",
    // The other code points whose case mappings reach ASCII letters: U+0131 (ı) uppercases to I, U+017F (ſ) to S,
    // U+212A (Kelvin sign) lowercases to k — against the second admin-only prefix, /kiosk.
    "/%E2%84%AAiosk/x",
    "/KIOS%E2%84%AA/x",
    "/kio%C5%BFk/x",
    "/k%C4%B1osk/x",
    // Compatibility forms (NFKC readers): fullwidth `ａ` and `Ａ`.
    "/%EF%BD%81dmin/x",
    "/%EF%BC%A1DMIN/x",
    "/public/%2e%2e/%61dmin/x",
    // Other bytes: NUL, overlong UTF-8, fragment and query, absolute form.
    "/admin%00/x",
    "/public/%00/../admin/x",
    "/public/..%c0%afadmin/x",
    "/public/x#/../../admin/x",
    "/public#/../admin/x",
    "/public/#/../ADMIN/x",
    "/public/x#/..%2f..%2fadmin/x",
    "/public/x#%2f..%2f..%2fadmin/x",
    "/public/x%23/../../admin/x",
    "/public/x?/../../admin/x",
    "http://127.0.0.1/admin/x",
    "http://127.0.0.1/public/..;/admin/x",
    // Combinations.
    "/public/..%2f%2e%2e%2fadmin/x",
    "/public%2f%2e%2e%2fadmin/x",
    "/public/%2e%2e%5cadmin/x",
    "/public//..;//admin/x",
    "/public/..;/%61dmin/x",
    "/public;jsessionid=x/..;/Admin/x",
    "/public/%2e%2e;jsessionid=x/ADMIN/x",
    // Near misses of the prefix that some reading could still take for it.
    "/admin%20/x",
    "/admin./x",
    "/admin%2e/x",
    "/admin%3F/x",
    "/admin%23/x",
    "/public%3F/../admin/x",
    "/public/x /../../admin/x",
];

/// Requests for `/admin/x` carrying a client-made original-URI header: in forward-auth mode the proxy must
/// overwrite or drop it, and idgate must not decide on a header the proxy passed through from the client.
const SPOOFED: &[(&str, &str)] = &[
    ("x-forwarded-uri", "/public/x"),
    ("x-original-uri", "/public/x"),
    ("x-original-url", "http://127.0.0.1/public/x"),
    ("x-rewrite-url", "/public/x"),
    ("x-forwarded-prefix", "/public"),
];

/// A framework behind idgate.
#[derive(Clone, Copy, Debug)]
enum Framework {
    Flask,
    Koa,
    Express,
    Tomcat,
    /// Caddy as the application server (Go's net/http; path matchers as its file_server reads paths).
    CaddyApp,
}

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn apps_dir() -> PathBuf {
    manifest_dir().join("tests/differential")
}

/// A started process (framework or proxy), killed when dropped, with its scratch directory.
struct Proc {
    name: String,
    child: Child,
    dir: tempfile::TempDir,
}

impl Proc {
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }
}

fn spawn(name: &str, mut cmd: Command, dir: tempfile::TempDir) -> Proc {
    let log = std::fs::File::create(dir.path().join("stderr.log")).unwrap();
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(log).kill_on_drop(true);
    let child = cmd.spawn().unwrap_or_else(|e| panic!("{name} could not start ({e}): run scripts/deps.sh"));
    Proc { name: name.into(), child, dir }
}

/// Reads the `{"port":N}` line an app prints once it listens.
async fn read_port(p: &mut Proc) -> u16 {
    let stdout = p.child.stdout.take().unwrap();
    let mut line = String::new();
    let read = tokio::time::timeout(Duration::from_secs(30), BufReader::new(stdout).read_line(&mut line)).await;
    let port =
        read.ok().and_then(|_| serde_json::from_str::<serde_json::Value>(&line).ok()).and_then(|v| v["port"].as_u64());
    match port {
        Some(port) => u16::try_from(port).unwrap(),
        None => panic!("{} did not report its port (run scripts/deps.sh): {line}\n{}", p.name, p.log()),
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Polls `target` on `addr` until it answers 200 with `marker` in the body.
async fn await_ready(p: &Proc, addr: SocketAddr, target: &str, marker: &str, within: Duration) {
    let start = Instant::now();
    while start.elapsed() < within {
        let r = raw_get(addr, target, None).await;
        if r.status == 200 && r.body.contains(marker) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{} never answered {target} with {marker}:\n{}", p.name, p.log());
}

async fn start_framework(fw: Framework) -> (Proc, SocketAddr) {
    let dir = tempfile::tempdir().unwrap();
    let mut p = match fw {
        Framework::Flask => {
            // Debian's interpreter, where python3-flask is installed (not whatever python3 is first on PATH).
            let mut cmd = Command::new("/usr/bin/python3");
            cmd.arg(apps_dir().join("flask_app.py"));
            spawn("flask", cmd, dir)
        }
        Framework::Koa | Framework::Express => {
            assert!(
                apps_dir().join("node_modules/koa").is_dir() && apps_dir().join("node_modules/express").is_dir(),
                "tests/differential/node_modules is missing: run scripts/deps.sh"
            );
            let mut cmd = Command::new("node");
            cmd.arg(apps_dir().join("node_apps.mjs")).arg(if matches!(fw, Framework::Koa) { "koa" } else { "express" });
            spawn(&format!("{fw:?}"), cmd, dir)
        }
        Framework::Tomcat => return start_tomcat(dir).await,
        Framework::CaddyApp => return with_retries(start_caddy_app).await,
    };
    let port = read_port(&mut p).await;
    (p, SocketAddr::from(([127, 0, 0, 1], port)))
}

/// Caddy serving tests/differential/app.Caddyfile.
async fn start_caddy_app() -> Result<(Proc, SocketAddr), String> {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut cmd = caddy_command(&dir, &apps_dir().join("app.Caddyfile"));
    cmd.env("DIFF_PORT", port.to_string());
    let p = await_listening(spawn("caddy app", cmd, dir), &[port]).await?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    await_ready(&p, addr, "/public/ready", "DIFF-PUBLIC caddy", Duration::from_secs(10)).await;
    Ok((p, addr))
}

fn caddy_command(dir: &tempfile::TempDir, config: &Path) -> Command {
    let binary = ["/usr/bin/caddy", "/usr/local/bin/caddy"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("caddy is not installed: run scripts/deps.sh");
    let mut cmd = Command::new(binary);
    cmd.args(["run", "--adapter", "caddyfile", "--config"])
        .arg(config)
        .env("HOME", dir.path())
        .env("XDG_DATA_HOME", dir.path().join("data"))
        .env("XDG_CONFIG_HOME", dir.path().join("config"));
    cmd
}

/// Tomcat 10 from Debian's tomcat10-common, run from a scratch CATALINA_BASE holding tests/differential/tomcat.
async fn start_tomcat(dir: tempfile::TempDir) -> (Proc, SocketAddr) {
    let home = Path::new("/usr/share/tomcat10");
    assert!(home.join("bin/bootstrap.jar").exists(), "Tomcat 10 is not installed: run scripts/deps.sh");
    let base = dir.path();
    copy_tree(&apps_dir().join("tomcat"), base);
    for d in ["logs", "work", "temp", "lib"] {
        std::fs::create_dir_all(base.join(d)).unwrap();
    }
    // Jasper compiles the JSPs with Eclipse's compiler, which Debian keeps outside Tomcat's lib/.
    let ecj = Path::new("/usr/share/java/eclipse-jdt-core.jar");
    assert!(ecj.exists(), "libeclipse-jdt-core-java is not installed: run scripts/deps.sh");
    std::os::unix::fs::symlink(ecj, base.join("lib/eclipse-jdt-core.jar")).unwrap();
    // Port 0: Tomcat binds a free port and names it in its log ("http-nio-127.0.0.1-auto-1-PORT").
    let server = base.join("conf/server.xml");
    let xml = std::fs::read_to_string(&server).unwrap().replace("@PORT@", "0");
    std::fs::write(&server, xml).unwrap();
    let mut cmd = Command::new("java");
    cmd.args(["-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC", "-Xmx256m", "-Xss1m"])
        .arg(format!("-Dcatalina.home={}", home.display()))
        .arg(format!("-Dcatalina.base={}", base.display()))
        .arg(format!("-Djava.io.tmpdir={}", base.join("temp").display()))
        .arg("-cp")
        .arg(format!("{0}/bin/bootstrap.jar:{0}/bin/tomcat-juli.jar", home.display()))
        .args(["org.apache.catalina.startup.Bootstrap", "start"])
        .current_dir(base);
    let mut p = spawn("tomcat", cmd, dir);
    let start = Instant::now();
    let port = loop {
        let log = p.log();
        if let Some(port) = log
            .split("-auto-1-")
            .nth(1)
            .map(|rest| rest.chars().take_while(char::is_ascii_digit).collect::<String>())
            .and_then(|digits| digits.parse::<u16>().ok())
        {
            break port;
        }
        if start.elapsed() > Duration::from_secs(60) || p.child.try_wait().unwrap().is_some() {
            panic!("Tomcat did not start (run scripts/deps.sh):\n{log}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    await_ready(&p, addr, "/public/ready", "DIFF-PUBLIC tomcat", Duration::from_secs(60)).await;
    (p, addr)
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let dest = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &dest);
        } else {
            std::fs::copy(entry.path(), dest).unwrap();
        }
    }
}

/// nginx (Debian's nginx-light) with two servers: a plain proxy in front of idgate, and the shipped forward-auth
/// example (deploy/nginx/example.conf including idgate-locations.conf) in front of the framework.
async fn start_nginx(idgate: SocketAddr, app: SocketAddr) -> Result<(Proc, u16, u16), String> {
    let binary = ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("nginx is not installed: run scripts/deps.sh");
    let dir = tempfile::tempdir().unwrap();
    let (proxy, auth) = (free_port(), free_port());
    let snippet = manifest_dir().join("deploy/nginx/idgate-locations.conf");
    let example = std::fs::read_to_string(manifest_dir().join("deploy/nginx/example.conf")).unwrap();
    let mut server = example.clone();
    for (from, to) in [
        ("server 127.0.0.1:4180;", format!("server {idgate};")),
        ("server 127.0.0.1:8080;", format!("server {app};")),
        ("listen 80;", format!("listen 127.0.0.1:{auth};")),
        ("/etc/nginx/idgate-locations.conf", snippet.display().to_string()),
    ] {
        assert!(server.contains(from), "deploy/nginx/example.conf no longer has `{from}`; adjust this test");
        server = server.replace(from, &to);
    }
    let d = dir.path().display();
    let conf = format!(
        "daemon off;\nmaster_process off;\nerror_log {d}/error.log warn;\npid {d}/nginx.pid;\n\
         events {{ worker_connections 256; }}\n\
         http {{\naccess_log off;\nclient_body_temp_path {d}/body;\nproxy_temp_path {d}/proxy;\n\
         fastcgi_temp_path {d}/fastcgi;\nuwsgi_temp_path {d}/uwsgi;\nscgi_temp_path {d}/scgi;\n{server}\n\
         server {{\n  listen 127.0.0.1:{proxy};\n  location / {{\n    proxy_pass http://idgate;\n\
         proxy_set_header Host $http_host;\n    proxy_set_header X-Forwarded-For $remote_addr;\n\
         proxy_set_header X-Forwarded-Proto $scheme;\n  }}\n}}\n}}\n"
    );
    let path = dir.path().join("nginx.conf");
    std::fs::write(&path, conf).unwrap();
    let mut cmd = Command::new(binary);
    cmd.arg("-p").arg(dir.path()).arg("-c").arg(&path);
    let p = spawn("nginx", cmd, dir);
    await_listening(p, &[proxy, auth]).await.map(|p| (p, proxy, auth))
}

/// Caddy (Debian's caddy) with two sites: `reverse_proxy` to idgate, and `forward_auth` to idgate's /oauth2/auth
/// before `reverse_proxy` to the framework.
async fn start_caddy(idgate: SocketAddr, app: SocketAddr) -> Result<(Proc, u16, u16), String> {
    let dir = tempfile::tempdir().unwrap();
    let (proxy, auth) = (free_port(), free_port());
    let conf = format!(
        "{{\n\tadmin off\n\tauto_https off\n}}\n\
         :{proxy} {{\n\tbind 127.0.0.1\n\treverse_proxy {idgate}\n}}\n\
         :{auth} {{\n\tbind 127.0.0.1\n\troute {{\n\t\tforward_auth {idgate} {{\n\t\t\turi /oauth2/auth\n\
         \t\t\tcopy_headers X-Auth-Request-User X-Auth-Request-Email X-Auth-Request-Roles\n\t\t}}\n\
         \t\treverse_proxy {app}\n\t}}\n}}\n"
    );
    let path = dir.path().join("Caddyfile");
    std::fs::write(&path, conf).unwrap();
    let cmd = caddy_command(&dir, &path);
    let p = spawn("caddy", cmd, dir);
    await_listening(p, &[proxy, auth]).await.map(|p| (p, proxy, auth))
}

/// Waits until `p` listens on all `ports`; `Err` with its log when it exited first (a port was taken since
/// [`free_port`] chose it: the caller tries again with other ports).
async fn await_listening(mut p: Proc, ports: &[u16]) -> Result<Proc, String> {
    for _ in 0..200 {
        let mut all = true;
        for port in ports {
            all &= TcpStream::connect(("127.0.0.1", *port)).await.is_ok();
        }
        if all {
            return Ok(p);
        }
        if p.child.try_wait().unwrap().is_some() {
            return Err(format!("{} exited:\n{}", p.name, p.log()));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{} did not listen on {ports:?}:\n{}", p.name, p.log());
}

/// Starts a server, trying again (three times in all) when it could not listen on the ports it was given.
async fn with_retries<T, F, Fut>(start: F) -> T
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let mut last = String::new();
    for _ in 0..3 {
        match start().await {
            Ok(started) => return started,
            Err(e) => last = e,
        }
    }
    panic!("{last}");
}

/// One answer, as the client saw it.
#[derive(Debug, Clone)]
struct Answer {
    status: u16,
    body: String,
}

impl Answer {
    /// The handler that answered: `A`dmin, `P`ublic, `O`ther, or `.` (no framework handler).
    fn handler(&self) -> char {
        if self.body.contains("DIFF-ADMIN") {
            'A'
        } else if self.body.contains("DIFF-PUBLIC") {
            'P'
        } else if self.body.contains("DIFF-OTHER") {
            'O'
        } else {
            '.'
        }
    }

    /// The path the framework's router saw.
    fn seen(&self) -> &str {
        self.body.split_once(" path=").map(|(_, p)| p.lines().next().unwrap_or("")).unwrap_or("")
    }

    fn cell(&self) -> String {
        format!("{}{}", self.status, self.handler())
    }
}

/// Sends `GET <target>` byte for byte (no client-side URI parsing or normalisation) and reads the answer.
async fn raw_get(addr: SocketAddr, target: &str, cookie: Option<&str>) -> Answer {
    raw_get_with(addr, target, cookie, None).await
}

async fn raw_get_with(addr: SocketAddr, target: &str, cookie: Option<&str>, extra: Option<(&str, &str)>) -> Answer {
    let exchange = async {
        let mut s = TcpStream::connect(addr).await?;
        let mut req = format!("GET {target} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/html\r\nConnection: close\r\n");
        if let Some(c) = cookie {
            let _ = write!(req, "Cookie: {c}\r\n");
        }
        if let Some((name, value)) = extra {
            let _ = write!(req, "{name}: {value}\r\n");
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes()).await?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await?;
        Ok::<_, std::io::Error>(raw)
    };
    let raw = match tokio::time::timeout(Duration::from_secs(10), exchange).await {
        Ok(Ok(raw)) => raw,
        Ok(Err(e)) => return Answer { status: 0, body: format!("connection error: {e}") },
        Err(_) => return Answer { status: 0, body: "timed out".into() },
    };
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    Answer { status, body: if chunked { dechunk(body) } else { body.to_owned() } }
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16) else { break };
        if n == 0 || rest.len() < n {
            out.push_str(rest.get(..n.min(rest.len())).unwrap_or(""));
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].strip_prefix("\r\n").unwrap_or(&rest[n..]);
    }
    out
}

/// The session cookies of a logged-in browser, as one Cookie header value.
fn cookie_of(b: &Browser) -> String {
    b.jar.lock().unwrap().iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ")
}

/// Runs the corpus and the ordinary paths through every chain in front of `fw`; panics with a table on failure.
async fn differential(fw: Framework) {
    let started = Instant::now();
    let (app_proc, app) = start_framework(fw).await;
    let gate = TestGate::builder()
        .upstream(app)
        .settings(|s| {
            s.server.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
            let admin_only = |prefix| {
                let mut r = route(prefix, AuthMode::Login);
                r.any_of.insert("https://example.com/roles".into(), vec!["admin".into()]);
                r
            };
            s.routes = vec![route("/public", AuthMode::Public), admin_only("/admin"), admin_only("/kiosk")];
        })
        .spawn()
        .await;
    let idgate = gate.running.as_ref().unwrap().public_addr;
    // Logged in directly at idgate; the cookies work through every chain (all on 127.0.0.1).
    let user = cookie_of(&gate.login_as("alice").await);
    let admin = cookie_of(&gate.login_as("admin-ann").await);
    let (nginx, nginx_proxy, nginx_auth) = with_retries(|| start_nginx(idgate, app)).await;
    let (caddy, caddy_proxy, caddy_auth) = with_retries(|| start_caddy(idgate, app)).await;
    let at = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
    let chains: [(&str, SocketAddr); 5] = [
        ("idgate", idgate),
        ("nginx>idgate", at(nginx_proxy)),
        ("caddy>idgate", at(caddy_proxy)),
        ("nginx+auth_request", at(nginx_auth)),
        ("caddy+forward_auth", at(caddy_auth)),
    ];
    let ready = started.elapsed();

    let mut failures = Vec::new();
    // Ordinary paths work on every chain.
    for (chain, addr) in &chains {
        for (who, cookie, target, want) in [
            ("anonymous", None, "/public/x", 'P'),
            ("admin", Some(admin.as_str()), "/admin/x", 'A'),
            ("admin", Some(admin.as_str()), "/kiosk/x", 'A'),
            ("user", Some(user.as_str()), "/other", 'O'),
            ("user", Some(user.as_str()), "/public/x", 'P'),
            // Escapes that stay, and a query that is none of the path rule's business.
            ("anonymous", None, "/public/a%20b", 'P'),
            ("anonymous", None, "/public/x?next=/admin/..%2f;x=%2e%2e", 'P'),
            ("admin", Some(admin.as_str()), "/admin/x?a=%2F", 'A'),
        ] {
            let a = raw_get(*addr, target, cookie).await;
            if a.status != 200 || a.handler() != want {
                failures.push(format!(
                    "{chain}: {who} GET {target} should reach the {want} handler, got {} {:?}",
                    a.status,
                    a.body.chars().take(200).collect::<String>()
                ));
            }
        }
    }
    // The corpus: anonymous and a user without the role never reach an admin handler.
    let mut table = format!(
        "{fw:?} — cells: status + handler (A admin, P public, O other, . none) for anonymous / user\n{:<52}",
        "target"
    );
    for (chain, _) in &chains {
        let _ = write!(table, " {chain:>18}");
    }
    table.push('\n');
    let rows = CORPUS.iter().map(|t| (*t, None)).chain(SPOOFED.iter().map(|h| ("/admin/x", Some(*h))));
    for (target, extra) in rows {
        let label = match extra {
            Some((name, value)) => format!("{target} [{name}: {value}]"),
            None => target.to_owned(),
        };
        let _ = write!(table, "{label:<52}");
        for (chain, addr) in &chains {
            let anon = raw_get_with(*addr, target, None, extra).await;
            let usr = raw_get_with(*addr, target, Some(&user), extra).await;
            let mut cell = format!("{}/{}", anon.cell(), usr.cell());
            for (who, a) in [("anonymous", &anon), ("user", &usr)] {
                if a.handler() == 'A' {
                    cell.push('!');
                    failures.push(format!(
                        "{fw:?} via {chain}: {who} GET {label} reached the admin handler (it saw {})",
                        a.seen()
                    ));
                }
            }
            let _ = write!(table, " {cell:>18}");
        }
        table.push('\n');
    }
    println!("{table}");
    println!("{fw:?}: ready after {ready:?}, done after {:?}", started.elapsed());
    gate.shutdown().await;
    drop((nginx, caddy, app_proc));
    assert!(failures.is_empty(), "{} failures (table above):\n{}", failures.len(), failures.join("\n"));
}

#[tokio::test]
async fn differential_flask() {
    differential(Framework::Flask).await;
}

#[tokio::test]
async fn differential_koa() {
    differential(Framework::Koa).await;
}

#[tokio::test]
async fn differential_express() {
    differential(Framework::Express).await;
}

#[tokio::test]
async fn differential_tomcat() {
    differential(Framework::Tomcat).await;
}

#[tokio::test]
async fn differential_caddy_app() {
    differential(Framework::CaddyApp).await;
}
