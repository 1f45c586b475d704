//! The front doors beside nginx: a real Caddy (Debian's package) running deploy/caddy/Caddyfile in front of idgate;
//! and the Envoy, Envoy Gateway and Istio files, which cannot run here (Envoy has no Debian package), parsed and
//! cross-checked against idgate's configuration and endpoints.

use std::{net::SocketAddr, path::Path, process::Stdio, time::Duration};

use http::StatusCode;
use idgate::config::{self, AuthMode};
use yaml_rust2::Yaml;

use crate::{
    deploy::{check_deployment, docs, find, load_config, repo, strs},
    harness::{Browser, TestGate, route, spawn_json_echo, until_listening},
};

/// A running Caddy in its own process group; dropping it stops the group.
struct Caddy {
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl Drop for Caddy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn caddy_binary() -> &'static str {
    ["/usr/bin/caddy", "/usr/local/bin/caddy"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("caddy is not installed: run scripts/deps.sh")
}

async fn start_caddy(port: u16, caddyfile: &str) -> Caddy {
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("Caddyfile");
    std::fs::write(&path, caddyfile).unwrap();
    let child = std::process::Command::new(caddy_binary())
        .args(["run", "--adapter", "caddyfile", "--config", path.to_str().unwrap()])
        // Caddy keeps its state under HOME/XDG dirs: a fresh one per test.
        .env("HOME", dir.path())
        .env("XDG_DATA_HOME", dir.path())
        .env("XDG_CONFIG_HOME", dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    let caddy = Caddy { child, _dir: dir };
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let up = tokio::time::timeout(Duration::from_secs(20), until_listening("caddy", addr)).await;
    assert!(up.is_ok(), "caddy did not start");
    caddy
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test]
async fn caddy_forward_auth_in_front_of_idgate() {
    let port = free_port();
    let app = spawn_json_echo().await;
    let gate = TestGate::builder()
        .settings(move |s| {
            s.server.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
            s.oidc.redirect_url = format!("http://127.0.0.1:{port}/oauth2/callback").parse().unwrap();
            let mut admin = route("/admin", AuthMode::Login);
            admin.any_of.insert("https://example.com/roles".into(), vec!["admin".into()]);
            s.routes = vec![route("/public", AuthMode::Public), admin];
        })
        .redirect_uri(format!("http://127.0.0.1:{port}/oauth2/callback"))
        .spawn()
        .await;
    let idgate = gate.running.as_ref().unwrap().public_addr;
    let caddyfile = std::fs::read_to_string(repo("deploy/caddy/Caddyfile"))
        .unwrap()
        .replace("127.0.0.1:4180", &idgate.to_string())
        .replace("127.0.0.1:8080", &app.to_string())
        .replace(":80 {", &format!("http://127.0.0.1:{port} {{"));
    let caddy = start_caddy(port, &caddyfile).await;
    let front = format!("http://127.0.0.1:{port}");

    // No session: idgate's 401 passes through Caddy; the app is not reached.
    let r = Browser::new().api().get(&format!("{front}/app/page")).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text());
    assert_eq!(r.json()["error"], "unauthenticated");
    // A public route needs no session; a client's identity headers never pass.
    let r = Browser::new().get_with(&format!("{front}/public/x"), &[("x-auth-request-user", "forged")]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.upstream_header("x-auth-request-user"), None, "{}", r.text());
    // The login runs through Caddy (its /oauth2/ endpoints are idgate's).
    let b = Browser::new();
    let start = b.get(&format!("{front}/oauth2/start?rd=/app/page")).await;
    assert_eq!(start.status, StatusCode::FOUND);
    let cb = b.authorize_and_callback(&front, start.location(), "Nina").await;
    assert_eq!(cb.status, StatusCode::FOUND, "{}", cb.text());
    let spoofs = [
        ("x-auth-request-user", "forged"),
        ("x-auth-request-email", "forged2"),
        ("x-auth-request-groups", "forged3"),
        ("x-forwarded-user", "forged4"),
        ("remote-user", "forged5"),
        ("x-forwarded-access-token", "forged6"),
    ];
    let r = b.get_with(&format!("{front}/app/page"), &spoofs).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.upstream_header("x-auth-request-user").as_deref(), Some("dev|nina"));
    assert_eq!(r.upstream_header("x-auth-request-email").as_deref(), Some("nina@example.com"));
    assert!(!r.text().contains("forged"), "Caddy drops the client's identity headers: {}", r.text());
    // idgate's session cookie stays between the browser, Caddy and idgate; the app's own cookies pass.
    b.set_cookie("app_pref", "dark");
    let r = b.get(&format!("{front}/app/page")).await;
    assert_eq!(r.upstream_header("cookie").as_deref(), Some("app_pref=dark"), "{}", r.text());
    b.jar.lock().unwrap().remove("app_pref");
    let r = b.get(&format!("{front}/app/page")).await;
    assert_eq!(r.upstream_header("cookie"), None, "only idgate's cookie: none reaches the app: {}", r.text());
    // Route rules apply to the original URI Caddy reports; a client's X-Forwarded-Uri does not change it.
    let denied = b.api().get(&format!("{front}/admin/x")).await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN, "{}", denied.text());
    let spoofed = b.api().get_with(&format!("{front}/admin/x"), &[("x-forwarded-uri", "/public/x")]).await;
    assert_eq!(spoofed.status, StatusCode::FORBIDDEN, "Caddy sets X-Forwarded-Uri itself");
    drop(caddy);
    gate.shutdown().await;
}

/// The idgate settings in deploy/envoy/idgate.toml.
fn envoy_settings() -> config::Settings {
    load_config(&std::fs::read_to_string(repo("deploy/envoy/idgate.toml")).unwrap(), &[])
}

/// The one HTTP connection manager of an Envoy static config, and its clusters.
fn envoy(path: &str) -> (Yaml, Vec<Yaml>) {
    let d = docs(path).remove(0);
    let hcm = d["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"].clone();
    let clusters = d["static_resources"]["clusters"].as_vec().unwrap().clone();
    (hcm, clusters)
}

fn filter<'a>(hcm: &'a Yaml, name: &str) -> &'a Yaml {
    let filters = hcm["http_filters"].as_vec().unwrap();
    let f = filters.iter().find(|f| f["name"].as_str() == Some(name)).unwrap_or_else(|| panic!("{name} filter"));
    &f["typed_config"]
}

fn cluster_port<'a>(clusters: &'a [Yaml], name: &str) -> (&'a Yaml, u16) {
    let c = clusters.iter().find(|c| c["name"].as_str() == Some(name)).unwrap_or_else(|| panic!("cluster {name}"));
    let addr = &c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"];
    (c, addr["port_value"].as_i64().unwrap() as u16)
}

/// Both Envoy configs: ext_authz denies when idgate does not answer; the router runs after it; idgate's own
/// endpoints go to its public listener with ext_authz off; Envoy does not rewrite the path idgate judged.
fn check_envoy_common(path: &str, settings: &config::Settings) -> (Yaml, Vec<Yaml>) {
    let (hcm, clusters) = envoy(path);
    let names: Vec<&str> = hcm["http_filters"].as_vec().unwrap().iter().filter_map(|f| f["name"].as_str()).collect();
    assert_eq!(names, ["envoy.filters.http.ext_authz", "envoy.filters.http.router"], "{path}");
    let ext = filter(&hcm, "envoy.filters.http.ext_authz");
    assert_eq!(ext["failure_mode_allow"].as_bool(), Some(false), "{path}: a failed check denies");
    assert_eq!(ext["transport_api_version"].as_str(), Some("V3"), "{path}");
    assert_eq!(hcm["normalize_path"].as_bool(), Some(false), "{path}");
    assert_eq!(hcm["merge_slashes"].as_bool(), Some(false), "{path}");
    assert_eq!(hcm["path_with_escaped_slashes_action"].as_str(), Some("KEEP_UNCHANGED"), "{path}");
    assert_eq!(hcm["headers_with_underscores_action"].as_str(), Some("REJECT_REQUEST"), "{path}: no X_Auth_* spelling");
    let routes = hcm["route_config"]["virtual_hosts"][0]["routes"].as_vec().unwrap();
    let ours = &routes[0];
    assert_eq!(ours["match"]["prefix"].as_str(), Some(format!("{}/", settings.server.prefix).as_str()), "{path}");
    assert_eq!(ours["route"]["cluster"].as_str(), Some("idgate"));
    assert_eq!(ours["typed_per_filter_config"]["envoy.filters.http.ext_authz"]["disabled"].as_bool(), Some(true));
    assert_eq!(routes.last().unwrap()["route"]["cluster"].as_str(), Some("app"));
    assert_eq!(cluster_port(&clusters, "idgate").1, settings.server.listen.port(), "{path}: idgate's public port");
    (hcm, clusters)
}

#[test]
fn envoy_grpc_config_points_at_the_grpc_listener() {
    let settings = envoy_settings();
    let (hcm, clusters) = check_envoy_common("deploy/envoy/envoy-grpc.yaml", &settings);
    let ext = filter(&hcm, "envoy.filters.http.ext_authz");
    assert!(ext["allowed_headers"].is_badvalue(), "gRPC checks see every header, so idgate can remove spoofs");
    let name = ext["grpc_service"]["envoy_grpc"]["cluster_name"].as_str().unwrap();
    let (cluster, port) = cluster_port(&clusters, name);
    assert_eq!(
        Some(port),
        settings.ext_authz.grpc_listen.map(|a| a.port()),
        "the cluster reaches ext_authz.grpc_listen"
    );
    let http2 = &cluster["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"];
    assert!(!http2["explicit_http_config"]["http2_protocol_options"].is_badvalue(), "gRPC needs HTTP/2 (h2c)");
    assert!(settings.ext_authz.grpc_tls.is_none() && cluster["transport_socket"].is_badvalue(), "both h2c");
}

#[test]
fn envoy_http_config_lets_identity_headers_and_cookies_flow() {
    let settings = envoy_settings();
    let (hcm, _) = check_envoy_common("deploy/envoy/envoy-http.yaml", &settings);
    let ext = filter(&hcm, "envoy.filters.http.ext_authz");
    let service = &ext["http_service"];
    assert_eq!(service["path_prefix"].as_str(), Some(format!("{}/auth", settings.server.prefix).as_str()));
    assert_eq!(service["server_uri"]["cluster"].as_str(), Some("idgate"));
    assert!(!settings.server.trusted_proxies.is_empty(), "the HTTP shape is believed from trusted proxies only");
    let patterns = |y: &Yaml| -> Vec<(String, String)> {
        y["patterns"]
            .as_vec()
            .unwrap()
            .iter()
            .map(|p| {
                let (k, v) = p.as_hash().unwrap().iter().next().unwrap();
                (k.as_str().unwrap().to_owned(), v.as_str().unwrap().to_owned())
            })
            .collect()
    };
    let matches = |list: &[(String, String)], name: &str| {
        list.iter().any(|(k, v)| (k == "exact" && v == name) || (k == "prefix" && name.starts_with(v.as_str())))
    };
    // What idgate reads to decide, and how to answer.
    let sent = patterns(&ext["allowed_headers"]);
    for h in ["cookie", "authorization", "accept", "sec-fetch-mode", "x-requested-with"] {
        assert!(matches(&sent, h), "allowed_headers sends {h}");
    }
    // idgate removes only the spoofed headers it sees (besides the names it always lists).
    assert!(matches(&sent, "x-auth-request-groups"), "allowed_headers sends any x-auth-request-* the client sent");
    let response = &service["authorization_response"];
    let upstream = patterns(&response["allowed_upstream_headers"]);
    for (h, _) in config::settings::DEFAULT_HEADERS {
        assert!(matches(&upstream, h), "allowed_upstream_headers copies {h}");
    }
    assert!(matches(&upstream, "cookie"), "the app's cookies, less idgate's, replace the request's");
    let client = patterns(&response["allowed_client_headers"]);
    for h in ["location", "set-cookie", "content-type", "cache-control"] {
        assert!(matches(&client, h), "allowed_client_headers passes {h} on a denial");
    }
    assert!(
        matches(&patterns(&response["allowed_client_headers_on_success"]), "set-cookie"),
        "a renewal reaches the client"
    );
}

#[test]
fn gateway_api_and_istio_manifests_agree_with_the_ext_authz_service() {
    check_deployment("deploy/kubernetes/ext-authz.yaml", "idgate-ext-authz");
    let base = docs("deploy/kubernetes/ext-authz.yaml");
    let text = find(&base, "ConfigMap")[0]["data"]["idgate.toml"].as_str().unwrap().to_owned();
    let settings = load_config(&text, &[]);
    let grpc = settings.ext_authz.grpc_listen.expect("ext_authz.grpc_listen is set");
    let pod = &find(&base, "Deployment")[0]["spec"]["template"];
    let container = &pod["spec"]["containers"][0];
    let port = container["ports"].as_vec().unwrap().iter().find(|p| p["name"].as_str() == Some("grpc")).unwrap();
    assert_eq!(port["containerPort"].as_i64(), Some(i64::from(grpc.port())), "the grpc port is ext_authz.grpc_listen");
    assert!(grpc.ip().is_unspecified(), "the data plane reaches the grpc listener");
    assert_eq!(pod["metadata"]["annotations"]["sidecar.istio.io/inject"].as_str(), Some("false"));
    let service = find(&base, "Service")[0];
    let name = service["metadata"]["name"].as_str().unwrap();
    let sp = service["spec"]["ports"].as_vec().unwrap();
    let grpc_port = sp.iter().find(|p| p["name"].as_str() == Some("grpc")).unwrap();
    assert_eq!(grpc_port["targetPort"].as_str(), Some("grpc"));
    assert_eq!(grpc_port["appProtocol"].as_str(), Some("kubernetes.io/h2c"), "the data plane speaks h2c to it");
    let service_grpc = grpc_port["port"].as_i64().unwrap();
    let service_http = sp.iter().find(|p| p["name"].as_str() == Some("http")).unwrap()["port"].as_i64().unwrap();
    // Only the data plane may ask: the trusted network is the one the NetworkPolicy admits to the grpc port.
    let policy = find(&base, "NetworkPolicy")[0];
    let rule = policy["spec"]["ingress"]
        .as_vec()
        .unwrap()
        .iter()
        .find(|r| r["ports"].as_vec().unwrap().iter().any(|p| p["port"].as_str() == Some("grpc")))
        .unwrap();
    let admitted: Vec<String> =
        rule["from"].as_vec().unwrap().iter().map(|f| f["ipBlock"]["cidr"].as_str().unwrap().to_owned()).collect();
    let trusted: Vec<String> = settings.server.trusted_proxies.iter().map(|n| n.to_string()).collect();
    assert_eq!(admitted, trusted, "the grpc port admits exactly server.trusted_proxies");

    let eg = docs("deploy/kubernetes/envoy-gateway.yaml");
    let policy = find(&eg, "SecurityPolicy")[0];
    assert_eq!(policy["apiVersion"].as_str(), Some("gateway.envoyproxy.io/v1alpha1"));
    let ext = &policy["spec"]["extAuth"];
    assert_eq!(ext["failOpen"].as_bool(), Some(false));
    let backend = &ext["grpc"]["backendRefs"][0];
    assert_eq!(backend["name"].as_str(), Some(name));
    assert_eq!(backend["port"].as_i64(), Some(service_grpc));
    let routes = find(&eg, "HTTPRoute");
    let target = policy["spec"]["targetRefs"][0]["name"].as_str().unwrap();
    let app = routes.iter().find(|r| r["metadata"]["name"].as_str() == Some(target)).expect("the targeted HTTPRoute");
    assert_eq!(app["spec"]["rules"][0]["backendRefs"][0]["name"].as_str(), Some("my-app"));
    let endpoints = routes.iter().find(|r| r["metadata"]["name"].as_str() != Some(target)).expect("idgate's route");
    let rule = &endpoints["spec"]["rules"][0];
    assert_eq!(rule["matches"][0]["path"]["value"].as_str(), Some(format!("{}/", settings.server.prefix).as_str()));
    assert_eq!(rule["backendRefs"][0]["name"].as_str(), Some(name));
    assert_eq!(rule["backendRefs"][0]["port"].as_i64(), Some(service_http));

    let istio = docs("deploy/kubernetes/istio.yaml");
    let op = find(&istio, "IstioOperator")[0];
    let provider = &op["spec"]["meshConfig"]["extensionProviders"][0];
    let grpc_provider = &provider["envoyExtAuthzGrpc"];
    assert!(
        grpc_provider["service"].as_str().unwrap().starts_with(&format!("{name}.")),
        "the provider is idgate's Service"
    );
    assert_eq!(grpc_provider["port"].as_i64(), Some(service_grpc));
    assert_eq!(grpc_provider["failOpen"].as_bool(), Some(false));
    let authz = find(&istio, "AuthorizationPolicy")[0];
    assert_eq!(authz["spec"]["action"].as_str(), Some("CUSTOM"));
    assert_eq!(authz["spec"]["provider"]["name"].as_str(), provider["name"].as_str());
    let not_paths = strs(&authz["spec"]["rules"][0]["to"][0]["operation"]["notPaths"]);
    assert_eq!(not_paths, [format!("{}/*", settings.server.prefix)], "idgate's own endpoints are not checked");
    let vs = find(&istio, "VirtualService")[0];
    let first = &vs["spec"]["http"][0];
    assert_eq!(first["match"][0]["uri"]["prefix"].as_str(), Some(format!("{}/", settings.server.prefix).as_str()));
    let dest = &first["route"][0]["destination"];
    assert!(dest["host"].as_str().unwrap().starts_with(&format!("{name}.")));
    assert_eq!(dest["port"]["number"].as_i64(), Some(service_http));
}
