//! The deployment files agree with the binary: what can be checked without a Docker engine or a cluster.

use std::{collections::HashMap, path::Path};

use idgate::config;
use yaml_rust2::{Yaml, YamlLoader};

pub(crate) fn repo(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

pub(crate) fn docs(path: &str) -> Vec<Yaml> {
    YamlLoader::load_from_str(&std::fs::read_to_string(repo(path)).unwrap()).unwrap_or_else(|e| panic!("{path}: {e}"))
}

pub(crate) fn find<'a>(docs: &'a [Yaml], kind: &str) -> Vec<&'a Yaml> {
    docs.iter().filter(|d| d["kind"].as_str() == Some(kind)).collect()
}

pub(crate) fn strs(y: &Yaml) -> Vec<String> {
    y.as_vec().map(|v| v.iter().filter_map(|s| s.as_str().map(str::to_owned)).collect()).unwrap_or_default()
}

#[test]
fn dockerfile_builds_the_release_binary_and_runs_it_as_non_root() {
    let text = std::fs::read_to_string(repo("Dockerfile")).unwrap();
    let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.starts_with('#') && !l.is_empty()).collect();
    let stages: Vec<&&str> = lines.iter().filter(|l| l.starts_with("FROM ")).collect();
    assert_eq!(stages.len(), 2, "multi-stage: build and runtime");
    assert!(stages[1].contains("distroless"), "a minimal runtime with CA certificates: {}", stages[1]);
    assert!(
        text.contains("cargo build --release --locked --bin idgate"),
        "the build stage builds what `cargo build --release` builds"
    );
    for l in lines.iter().filter(|l| l.starts_with("COPY ") && !l.contains("--from")) {
        let parts: Vec<&str> = l.split_whitespace().collect();
        for src in &parts[1..parts.len() - 1] {
            assert!(repo(src).exists(), "COPY source {src} exists");
        }
    }
    let copied =
        lines.iter().find(|l| l.starts_with("COPY --from=build")).expect("the binary is copied from the build stage");
    assert!(copied.contains("/src/target/release/idgate"));
    let dest = copied.split_whitespace().last().unwrap();
    let entry = lines.iter().find(|l| l.starts_with("ENTRYPOINT")).unwrap();
    assert!(entry.contains(&format!("\"{dest}\"")), "ENTRYPOINT runs the copied binary");
    let user =
        lines.iter().rev().find(|l| l.starts_with("USER ")).expect("USER set").trim_start_matches("USER ").trim();
    assert!(!user.starts_with("root") && !user.starts_with("0:") && user != "0", "not root: {user}");
    assert!(lines.contains(&"CMD [\"run\"]"));
    assert!(lines.contains(&"ENV IDGATE_CONFIG=/etc/idgate/idgate.toml"));
    let expose = lines.iter().find(|l| l.starts_with("EXPOSE")).unwrap();
    let docker = load_config(&std::fs::read_to_string(repo("config/docker.toml")).unwrap(), &[]);
    for port in [docker.server.listen.port(), docker.admin.listen.port()] {
        assert!(expose.contains(&port.to_string()), "EXPOSE {port}");
    }
}

/// Loads config text the way idgate would, with secret files provided by the test.
pub(crate) fn load_config(text: &str, env: &[(&str, &str)]) -> config::Settings {
    let dir = tempfile::tempdir().unwrap();
    let secrets = dir.path().join("secrets");
    std::fs::create_dir(&secrets).unwrap();
    for name in ["client_secret", "session_secret"] {
        std::fs::write(secrets.join(name), "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=").unwrap();
    }
    let text = text.replace("/etc/idgate/secrets/", &format!("{}/", secrets.display()));
    let path = dir.path().join("idgate.toml");
    std::fs::write(&path, text).unwrap();
    let mut env: HashMap<String, String> = env.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect();
    env.entry("IDGATE_SESSION__SECRET".into()).or_insert_with(|| "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=".into());
    if text_has_secret_file(&path) {
        env.remove("IDGATE_SESSION__SECRET");
    }
    config::load(&path, &env).unwrap_or_else(|e| panic!("config does not load:\n{e}"))
}

fn text_has_secret_file(path: &Path) -> bool {
    std::fs::read_to_string(path).unwrap().contains("secret_file")
}

pub(crate) fn check_deployment(path: &str, config_map: &str) {
    let docs = docs(path);
    let cm = find(&docs, "ConfigMap")
        .into_iter()
        .find(|c| c["metadata"]["name"].as_str() == Some(config_map))
        .expect("ConfigMap");
    let text = cm["data"]["idgate.toml"].as_str().expect("idgate.toml in the ConfigMap");
    let settings = load_config(text, &[]);
    let deployment = find(&docs, "Deployment")[0];
    let pod = &deployment["spec"]["template"]["spec"];
    let containers = pod["containers"].as_vec().unwrap();
    let idgate = containers.iter().find(|c| c["name"].as_str() == Some("idgate")).expect("idgate container");
    assert_eq!(strs(&idgate["args"]), ["run", "--config", "/etc/idgate/idgate.toml"], "{path}: args match the CLI");
    let port = |name: &str| {
        idgate["ports"]
            .as_vec()
            .unwrap()
            .iter()
            .find(|p| p["name"].as_str() == Some(name))
            .and_then(|p| p["containerPort"].as_i64())
            .unwrap()
    };
    assert_eq!(port("http") as u16, settings.server.listen.port(), "{path}: http port = server.listen");
    assert_eq!(port("admin") as u16, settings.admin.listen.port(), "{path}: admin port = admin.listen");
    assert!(settings.admin.listen.ip().is_unspecified(), "{path}: probes reach the admin listener");
    assert_eq!(idgate["readinessProbe"]["httpGet"]["path"].as_str(), Some("/readyz"));
    assert_eq!(idgate["livenessProbe"]["httpGet"]["path"].as_str(), Some("/healthz"));
    for probe in ["readinessProbe", "livenessProbe"] {
        assert_eq!(idgate[probe]["httpGet"]["port"].as_str(), Some("admin"), "{path}: {probe} on the admin port");
    }
    let sc = &idgate["securityContext"];
    assert_eq!(sc["runAsNonRoot"].as_bool(), Some(true));
    assert_eq!(sc["readOnlyRootFilesystem"].as_bool(), Some(true));
    assert_eq!(sc["allowPrivilegeEscalation"].as_bool(), Some(false));
    assert_eq!(strs(&sc["capabilities"]["drop"]), ["ALL"]);
    assert!(idgate["resources"]["limits"]["memory"].as_str().is_some(), "{path}: memory limit");
    let grace = pod["terminationGracePeriodSeconds"].as_i64().unwrap() as u64;
    assert!(grace > settings.server.shutdown_grace.as_secs(), "{path}: the kubelet waits longer than idgate drains");
    // Mounts: the config at the path the args name, the secrets where the *_file keys point.
    let mounts = idgate["volumeMounts"].as_vec().unwrap();
    let mount = |name: &str| mounts.iter().find(|m| m["name"].as_str() == Some(name)).unwrap();
    assert_eq!(mount("config")["mountPath"].as_str(), Some("/etc/idgate/idgate.toml"));
    assert_eq!(mount("config")["subPath"].as_str(), Some("idgate.toml"));
    let secret_dir = mount("secrets")["mountPath"].as_str().unwrap();
    let volumes = pod["volumes"].as_vec().unwrap();
    let volume = |name: &str| volumes.iter().find(|v| v["name"].as_str() == Some(name)).unwrap();
    assert_eq!(volume("config")["configMap"]["name"].as_str(), Some(config_map));
    let items: Vec<String> = volume("secrets")["secret"]["items"]
        .as_vec()
        .unwrap()
        .iter()
        .map(|i| i["path"].as_str().unwrap().to_owned())
        .collect();
    for line in text.lines().filter(|l| l.contains("_file")) {
        let file = line.split('"').nth(1).unwrap();
        let (dir, name) = file.rsplit_once('/').unwrap();
        assert_eq!(dir, secret_dir, "{path}: {file} is inside the secret mount");
        assert!(items.iter().any(|i| i == name), "{path}: the Secret provides {name}");
    }
    let service = find(&docs, "Service")[0];
    assert_eq!(service["spec"]["ports"][0]["targetPort"].as_str(), Some("http"), "{path}: the Service targets idgate");
}

#[test]
fn kubernetes_sidecar_agrees_with_the_cli_and_config() {
    check_deployment("deploy/kubernetes/sidecar.yaml", "my-app-idgate");
    let sidecar = docs("deploy/kubernetes/sidecar.yaml");
    let cm = find(&sidecar, "ConfigMap")[0]["data"]["idgate.toml"].as_str().unwrap().to_owned();
    let settings = load_config(&cm, &[]);
    assert_eq!(settings.upstream.url.host_str(), Some("127.0.0.1"), "the sidecar forwards to the app in its pod");
    for r in docs("deploy/kubernetes/kustomization.yaml")[0]["resources"].as_vec().unwrap() {
        assert!(repo(&format!("deploy/kubernetes/{}", r.as_str().unwrap())).exists());
    }
}

#[test]
fn kubernetes_gateway_agrees_with_the_cli_and_config() {
    check_deployment("deploy/kubernetes/gateway.yaml", "idgate-gateway");
    let docs = docs("deploy/kubernetes/gateway.yaml");
    let ingress = find(&docs, "Ingress")[0];
    let backend = &ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"];
    assert_eq!(backend["name"].as_str(), Some("idgate-gateway"));
}

#[test]
fn forward_auth_examples_point_at_the_auth_endpoint() {
    let nginx = docs("deploy/kubernetes/ingress-nginx.yaml");
    let annotations = &find(&nginx, "Ingress")[0]["metadata"]["annotations"];
    assert!(annotations["nginx.ingress.kubernetes.io/auth-url"].as_str().unwrap().ends_with("/oauth2/auth"));
    assert!(annotations["nginx.ingress.kubernetes.io/auth-signin"].as_str().unwrap().contains("/oauth2/start?rd="));
    let copied = annotations["nginx.ingress.kubernetes.io/auth-response-headers"].as_str().unwrap().to_owned();
    let example = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/nginx/example.conf")).unwrap();
    for (h, _) in config::settings::DEFAULT_HEADERS {
        // A mapped header the front proxy does not set from idgate's answer is the client's to choose.
        assert!(copied.split(',').any(|x| x.trim().eq_ignore_ascii_case(h)), "ingress-nginx copies {h}");
        let set = example.lines().any(|l| {
            let l = l.trim().to_ascii_lowercase();
            l.starts_with("proxy_set_header") && l.split_whitespace().nth(1) == Some(h)
        });
        assert!(set, "deploy/nginx/example.conf sets {h}");
    }
    let traefik = &docs("deploy/traefik/dynamic.yaml")[0]["http"]["middlewares"]["idgate"]["forwardAuth"];
    assert!(traefik["address"].as_str().unwrap().ends_with("/oauth2/auth"));
    // With trustForwardHeader a client-sent X-Forwarded-Uri would reach idgate as the original URI.
    assert_eq!(traefik["trustForwardHeader"].as_bool(), Some(false), "Traefik must set X-Forwarded-Uri itself");
    let headers = strs(&traefik["authResponseHeaders"]);
    for (h, _) in config::settings::DEFAULT_HEADERS {
        assert!(headers.iter().any(|x| x.eq_ignore_ascii_case(h)), "Traefik copies {h}");
    }
}

#[test]
fn compose_environment_overrides_are_real_settings() {
    let compose = &docs("deploy/compose.yaml")[0]["services"]["idgate"];
    let env: Vec<(String, String)> = compose["environment"]
        .as_hash()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().unwrap().to_owned(),
                v.as_str()
                    .unwrap_or("x")
                    .replace("${IDGATE_SESSION__SECRET}", "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="),
            )
        })
        .collect();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let settings = load_config(&std::fs::read_to_string(repo("config/docker.toml")).unwrap(), &env);
    assert_eq!(settings.upstream.url.as_str(), "http://app:8080/");
    assert_eq!(compose["read_only"].as_bool(), Some(true));
}

/// Issue 12 §2: only the ingress controller may speak for a client. gateway.yaml trusts the controller's addresses
/// (not the whole cluster network) and admits nobody else to the public port; ingress-nginx.yaml clears the URI
/// headers a client could add to the auth request (tests/it/nginx.rs runs the generated location for real).
#[test]
fn only_the_ingress_controller_may_name_the_original_request() {
    let gateway = docs("deploy/kubernetes/gateway.yaml");
    let text = find(&gateway, "ConfigMap")[0]["data"]["idgate.toml"].as_str().unwrap().to_owned();
    let settings = load_config(&text, &[]);
    assert!(!settings.server.trusted_proxies.is_empty());
    for net in &settings.server.trusted_proxies {
        let narrow = match net {
            ipnet::IpNet::V4(n) => n.prefix_len() >= 24,
            ipnet::IpNet::V6(n) => n.prefix_len() >= 112,
        };
        assert!(narrow, "gateway.yaml trusts {net}: wider than an ingress controller's addresses");
    }
    let policy = find(&gateway, "NetworkPolicy").into_iter().next().expect("a NetworkPolicy for idgate-gateway");
    let labels = &find(&gateway, "Deployment")[0]["spec"]["template"]["metadata"]["labels"];
    assert_eq!(policy["spec"]["podSelector"]["matchLabels"], *labels, "the policy selects idgate's pods");
    assert_eq!(strs(&policy["spec"]["policyTypes"]), ["Ingress"]);
    let rules = policy["spec"]["ingress"].as_vec().unwrap();
    let ports = |r: &Yaml| {
        r["ports"].as_vec().unwrap().iter().filter_map(|p| p["port"].as_str().map(str::to_owned)).collect::<Vec<_>>()
    };
    for rule in rules.iter().filter(|r| ports(r).iter().any(|p| p == "http")) {
        let from = rule["from"].as_vec().expect("the public port admits named peers only");
        assert_eq!(from.len(), 1);
        assert_eq!(
            from[0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"].as_str(),
            Some("ingress-nginx")
        );
        assert_eq!(from[0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"].as_str(), Some("controller"));
    }
    assert!(rules.iter().any(|r| ports(r).iter().any(|p| p == "admin")), "probes reach the admin port");

    let nginx = docs("deploy/kubernetes/ingress-nginx.yaml");
    let ingress =
        find(&nginx, "Ingress").into_iter().find(|i| i["metadata"]["name"].as_str() == Some("my-app")).unwrap();
    let named = ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/auth-proxy-set-headers"]
        .as_str()
        .expect("auth-proxy-set-headers");
    let cm = find(&nginx, "ConfigMap")
        .into_iter()
        .find(|c| {
            format!(
                "{}/{}",
                c["metadata"]["namespace"].as_str().unwrap_or(""),
                c["metadata"]["name"].as_str().unwrap_or("")
            ) == named
        })
        .expect("the ConfigMap auth-proxy-set-headers names");
    for header in ["X-Forwarded-Uri", "X-Forwarded-Method", "X-Original-URI"] {
        assert_eq!(cm["data"][header].as_str(), Some(""), "{header} is cleared in the auth request");
    }
}
