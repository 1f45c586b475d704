use std::{collections::HashMap, io::Write};

use super::*;

const GOOD: &str = r#"
[server]
listen = "127.0.0.1:4180"
trusted_proxies = ["10.0.0.0/8"]
[admin]
listen = "127.0.0.1:9180"
[upstream]
url = "http://127.0.0.1:8080"
[oidc]
issuer = "https://issuer.example.com"
client_id = "my-app"
client_secret = "s3cret"
redirect_url = "https://app.example.com/oauth2/callback"
[session]
secret = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
[headers]
"X-Auth-Request-User" = "sub"
"X-Roles" = "https://example.com/roles"
"#;

fn file(ext: &str, text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::Builder::new().suffix(ext).tempfile().unwrap();
    f.write_all(text.as_bytes()).unwrap();
    f
}

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

fn keys(e: &ConfigError) -> Vec<&str> {
    e.problems.iter().map(|p| p.key.as_str()).collect()
}

#[test]
fn good_file_loads_with_defaults() {
    let f = file(".toml", GOOD);
    let s = load(f.path(), &HashMap::new()).unwrap();
    assert_eq!(s.oidc.client_id, "my-app");
    assert_eq!(s.oidc.scopes, ["openid", "profile", "email"]);
    assert_eq!(s.session.cookie_name, "idgate");
    assert!(s.session.cookie_secure);
    assert_eq!(s.callback_path(), "/oauth2/callback");
    assert_eq!(s.headers.len(), 2);
    assert_eq!(s.headers[1].0.as_str(), "x-roles");
    assert_eq!(s.headers[1].1, "https://example.com/roles");
    assert_eq!(s.server.trusted_proxies.len(), 1);
}

#[test]
fn yaml_is_accepted() {
    let yaml = "upstream:\n  url: http://127.0.0.1:8080\noidc:\n  issuer: https://i.example.com\n  client_id: c\n  redirect_url: https://a.example.com/oauth2/callback\nsession:\n  secret: MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\n";
    let f = file(".yaml", yaml);
    assert_eq!(load(f.path(), &HashMap::new()).unwrap().oidc.issuer, "https://i.example.com");
}

#[test]
fn environment_overrides_and_idgate_config_coexist() {
    let f = file(".toml", GOOD);
    let e = env(&[
        ("IDGATE_CONFIG", "/somewhere/else.toml"),
        ("IDGATE_OIDC__CLIENT_SECRET", "from-env"),
        ("IDGATE_OIDC__SCOPES", "openid,email,offline_access"),
        ("IDGATE_SESSION__COOKIE_SECURE", "false"),
        ("IDGATE_SERVER__MAX_CONNECTIONS", "77"),
        ("UNRELATED", "x"),
    ]);
    let s = load(f.path(), &e).unwrap();
    assert_eq!(s.oidc.client_secret.unwrap().expose(), "from-env");
    assert_eq!(s.oidc.scopes, ["openid", "email", "offline_access"]);
    assert!(!s.session.cookie_secure);
    assert_eq!(s.server.max_connections, 77);
}

#[test]
fn secret_files_are_read() {
    let secret = file(".txt", "file-secret\n");
    let session = file(".txt", "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\n");
    let text = GOOD
        .replace("client_secret = \"s3cret\"", &format!("client_secret_file = {:?}", secret.path()))
        .replace("secret = \"MDEy", "secret_old = \"MDEy");
    let text = text.replace(
        "secret_old = \"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\"",
        &format!("secret_file = {:?}", session.path()),
    );
    let f = file(".toml", &text);
    let s = load(f.path(), &HashMap::new()).unwrap();
    assert_eq!(s.oidc.client_secret.unwrap().expose(), "file-secret");
    assert_eq!(s.session.secret.expose(), "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=");
    // The environment can name the file too.
    let f = file(".toml", GOOD);
    let s = load(
        f.path(),
        &env(&[
            ("IDGATE_OIDC__CLIENT_SECRET_FILE", secret.path().to_str().unwrap()),
            ("IDGATE_OIDC__CLIENT_SECRET", ""),
        ]),
    )
    .unwrap_err();
    assert_eq!(keys(&s), ["oidc.client_secret_file"], "both set is an error: {s}");
}

#[test]
fn missing_secret_file_names_the_key() {
    let text = GOOD.replace("client_secret = \"s3cret\"", "client_secret_file = \"/nonexistent/secret\"");
    let e = load(file(".toml", &text).path(), &HashMap::new()).unwrap_err();
    assert_eq!(keys(&e), ["oidc.client_secret_file"]);
    assert!(e.to_string().contains("/nonexistent/secret"));
}

#[test]
fn every_problem_is_reported_at_once() {
    let text = r#"
[server]
listen = "not-an-address"
trusted_proxies = ["10.0.0.0/33"]
max_header_bytes = 10
[upstream]
url = "ftp://x"
[oidc]
issuer = "issuer.example.com"
redirect_url = "/callback"
allowed_algs = ["HS256", "none", "XX1"]
scopes = ["profile"]
[session]
secret = "tiny-secret-value"
store = "disk"
"#;
    let e = load(file(".toml", text).path(), &HashMap::new()).unwrap_err();
    let k = keys(&e);
    for want in [
        "server.listen",
        "server.trusted_proxies[0]",
        "server.max_header_bytes",
        "upstream.url",
        "oidc.issuer",
        "oidc.client_id",
        "oidc.redirect_url",
        "oidc.allowed_algs",
        "oidc.scopes",
        "session.secret",
        "session.store",
    ] {
        assert!(k.contains(&want), "{want} not reported in {k:?}");
    }
    assert_eq!(k.iter().filter(|x| **x == "oidc.allowed_algs").count(), 3);
    assert!(!e.to_string().contains("tiny-secret-value"), "secret values are never echoed: {e}");
}

#[test]
fn unknown_keys_and_wrong_types_are_named() {
    let e =
        load(file(".toml", &GOOD.replace("[admin]", "[admin]\nlisten_typo = 1")).path(), &HashMap::new()).unwrap_err();
    assert!(e.to_string().contains("listen_typo"), "{e}");
    let e = load(file(".toml", &format!("{GOOD}\n[bogus]\nx = 1\n")).path(), &HashMap::new()).unwrap_err();
    assert!(e.to_string().contains("bogus"), "{e}");
    let e = load(
        file(
            ".toml",
            &GOOD.replace("listen = \"127.0.0.1:4180\"", "listen = \"127.0.0.1:4180\"\nmax_connections = \"many\""),
        )
        .path(),
        &HashMap::new(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("max_connections"), "{e}");
    let e = load(file(".toml", GOOD).path(), &env(&[("IDGATE_OIDC__CLIENT_SECRT", "x")])).unwrap_err();
    assert!(e.to_string().contains("client_secrt"), "{e}");
    let e = load(file(".toml", GOOD).path(), &env(&[("IDGATE_LOGLEVEL", "x")])).unwrap_err();
    assert_eq!(keys(&e), ["IDGATE_LOGLEVEL"]);
}

#[test]
fn unreadable_or_unparsable_files() {
    let e = load(std::path::Path::new("/nonexistent/idgate.toml"), &HashMap::new()).unwrap_err();
    assert_eq!(keys(&e), ["config"]);
    let e = load(file(".toml", "[server\nlisten=").path(), &HashMap::new()).unwrap_err();
    assert_eq!(keys(&e), ["config"]);
    let e = load(file(".ini", GOOD).path(), &HashMap::new()).unwrap_err();
    assert!(e.to_string().contains(".toml"));
}

#[test]
fn route_and_header_validation() {
    let text = format!(
        "{GOOD}\n[[routes]]\nprefix = \"public\"\n[[routes]]\nprefix = \"/p\"\nauth = \"public\"\nemail_domains = [\"example.com\"]\n[[routes]]\nprefix = \"/x\"\nauth = \"maybe\"\n"
    );
    let e = load(file(".toml", &text).path(), &HashMap::new()).unwrap_err();
    assert_eq!(keys(&e), ["routes[0].prefix", "routes[1].auth", "routes[2].auth"]);
    let bad_header = GOOD.replace("\"X-Roles\"", "\"Cookie\"");
    let e = load(file(".toml", &bad_header).path(), &HashMap::new()).unwrap_err();
    assert!(keys(&e)[0].starts_with("headers."), "{e}");
}

#[test]
fn example_configs_parse() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) == Some("toml") {
            // Examples name secret files that exist only in a deployment: give them real files.
            let secret = file(".txt", "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=");
            let text = std::fs::read_to_string(&path).unwrap();
            let text = regex_lite_replace_files(&text, secret.path().to_str().unwrap());
            let f = file(".toml", &text);
            // Files that name no secret file take their secrets from the environment, as documented in them.
            let env = if text.contains("secret_file") {
                HashMap::new()
            } else {
                env(&[
                    ("IDGATE_SESSION__SECRET", "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="),
                    ("IDGATE_OIDC__CLIENT_SECRET", "s"),
                ])
            };
            load(f.path(), &env).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            n += 1;
        }
    }
    assert!(n >= 3, "config/ holds the sidecar, gateway and docker examples");
}

/// Points every `*_file = "..."` line at `path`.
fn regex_lite_replace_files(text: &str, path: &str) -> String {
    text.lines()
        .map(|l| {
            let t = l.trim_start();
            if (t.starts_with("client_secret_file") || t.starts_with("secret_file")) && t.contains('=') {
                format!("{} = {path:?}", t.split('=').next().unwrap().trim())
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn readme_documents_every_key() {
    fn keys(prefix: &str, v: &serde_json::Value, out: &mut Vec<String>) {
        if let serde_json::Value::Object(map) = v {
            for (k, v) in map {
                let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                match v {
                    serde_json::Value::Object(_) => keys(&key, v, out),
                    _ => out.push(key),
                }
            }
        }
    }
    let mut all = Vec::new();
    keys("", &serde_json::to_value(raw::RawConfig::default()).unwrap(), &mut all);
    all.retain(|k| k != "routes");
    keys("routes[]", &serde_json::to_value(raw::RawRoute::default()).unwrap(), &mut all);
    // `[[providers]]` takes every `oidc.*` key besides its own three.
    all.retain(|k| k != "providers");
    all.extend(["providers[].name", "providers[].title", "providers[].hosts"].map(String::from));
    let readme = std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let missing: Vec<&String> = all
        .iter()
        .filter(|k| {
            let secret_file = k.strip_suffix("_file").map(|base| format!("`{base}` / `_file`"));
            !readme.contains(&format!("`{k}`")) && !secret_file.is_some_and(|s| readme.contains(&s))
        })
        .collect();
    assert!(missing.is_empty(), "README.md's configuration reference lacks {missing:?}");
}

#[test]
fn id_token_decryption_keys_are_loaded_and_checked() {
    let with = |extra: &str| GOOD.replace("[session]", &format!("{extra}\n[session]"));
    let load_text = |t: &str| load(file(".toml", t).path(), &HashMap::new());
    let pem = file(".pem", &crate::id_token::jwe::GeneratedKey::p256().private_pem);
    let s = load_text(&with(&format!(
        "id_token_decryption_key_file = {:?}\nrequire_encrypted_id_token = true\nid_token_encryption_algs = [\"ECDH-ES\"]\nid_token_encryption_encs = [\"A128CBC-HS256\", \"A256GCM\"]",
        pem.path()
    )))
    .unwrap();
    let d = &s.oidc.id_token_decryption;
    assert!(d.required && d.keys.as_ref().is_some_and(|k| k.len() == 1));
    assert_eq!(d.allowed.algs, [crate::id_token::jwe::KeyAlg::EcdhEs]);
    assert_eq!(d.allowed.encs.len(), 2);
    assert!(!format!("{s:?}").contains("PRIVATE"), "no key material in Debug");
    // Defaults: nothing required, every supported algorithm.
    let s = load_text(GOOD).unwrap();
    assert!(!s.oidc.id_token_decryption.required && s.oidc.id_token_decryption.keys.is_none());
    let cases = [
        (
            "id_token_decryption_key_file = \"/nonexistent/key.pem\"",
            "oidc.id_token_decryption_key_file",
            "/nonexistent/key.pem",
        ),
        (
            "require_encrypted_id_token = true",
            "oidc.require_encrypted_id_token",
            "needs oidc.id_token_decryption_key_file",
        ),
        ("id_token_encryption_algs = [\"RSA1_5\"]", "oidc.id_token_encryption_algs", "padding-oracle"),
        ("id_token_encryption_algs = [\"dir\"]", "oidc.id_token_encryption_algs", "dir is refused"),
        ("id_token_encryption_algs = []", "oidc.id_token_encryption_algs", "at least one"),
        ("id_token_encryption_encs = [\"A192GCM\"]", "oidc.id_token_encryption_encs", "A192GCM"),
    ];
    for (line, key, why) in cases {
        let e = load_text(&with(line)).unwrap_err();
        assert_eq!(keys(&e), [key], "{line}");
        assert!(e.to_string().contains(why), "{line}: {e}");
    }
    let not_a_key = file(".pem", "hello");
    let e = load_text(&with(&format!("id_token_decryption_key_file = {:?}", not_a_key.path()))).unwrap_err();
    assert_eq!(keys(&e), ["oidc.id_token_decryption_key_file"]);
    assert!(e.to_string().contains("no private key"), "{e}");
}

/// Issue 12: `server.prefix` and `session.cookie_domain` reach `Location` and `Set-Cookie` headers; a newline made
/// every `Set-Cookie` panic and a `;` injected cookie attributes. Both are refused at load, naming the key.
#[test]
fn header_bound_values_are_refused_at_load() {
    for (key, value) in [
        ("cookie_domain", "example.com\nX-Evil: 1"),
        ("cookie_domain", "example.com; SameSite=None"),
        ("cookie_domain", "example.com\r"),
        ("cookie_domain", "exa mple.com"),
        ("cookie_domain", ""),
        ("cookie_domain", "."),
        ("cookie_domain", "example..com"),
        ("cookie_domain", "-example.com"),
        ("cookie_domain", "example.com/"),
        ("cookie_domain", "ex\u{e4}mple.com"),
    ] {
        let text = GOOD.replace("[session]\n", &format!("[session]\n{key} = {value:?}\n"));
        let e = load(file(".toml", &text).path(), &HashMap::new()).unwrap_err();
        assert_eq!(keys(&e), ["session.cookie_domain"], "{value:?}: {e}");
        assert!(e.to_string().contains("must be a host name"), "{e}");
    }
    for value in [
        "/oauth2\nX-Evil: 1",
        "/oauth2;Domain=evil.com",
        "/oauth2 x",
        "/o%2e",
        "/oauth2/",
        "//oauth2",
        "/a//b",
        "/a/..",
        "/.",
        "/",
        "oauth2",
        "/\u{e4}",
    ] {
        let text = GOOD.replace("[server]\n", &format!("[server]\nprefix = {value:?}\n"));
        let e = load(file(".toml", &text).path(), &HashMap::new()).unwrap_err();
        assert_eq!(keys(&e), ["server.prefix"], "{value:?}: {e}");
        assert!(e.to_string().contains("must look like /oauth2"), "{e}");
    }
    for (key, value) in
        [("cookie_domain", "example.com"), ("cookie_domain", ".example.com"), ("cookie_domain", "a-1.b.example")]
    {
        let text = GOOD.replace("[session]\n", &format!("[session]\n{key} = {value:?}\n"));
        let s = load(file(".toml", &text).path(), &HashMap::new()).unwrap();
        assert_eq!(s.session.cookie_domain.as_deref(), Some(value));
    }
    for value in ["/oauth2", "/auth/idgate", "/_id.gate~1"] {
        let text = GOOD.replace("[server]\n", &format!("[server]\nprefix = {value:?}\n"));
        assert_eq!(load(file(".toml", &text).path(), &HashMap::new()).unwrap().server.prefix, value);
    }
}

/// Issue 13 (DPoP): `oidc.dpop` and `oidc.dpop_key_file`; a DPoP-bound access token cannot be forwarded.
#[test]
fn dpop_settings_are_loaded_and_checked() {
    use crate::oidc::dpop::DpopMode;
    let with = |extra: &str| GOOD.replace("[session]", &format!("{extra}\n[session]"));
    let load_text = |t: &str| load(file(".toml", t).path(), &HashMap::new());
    assert_eq!(load_text(GOOD).unwrap().oidc.dpop.mode, DpopMode::Auto);
    assert_eq!(load_text(&with("dpop = false")).unwrap().oidc.dpop.mode, DpopMode::Off);
    let pem = file(".pem", &crate::id_token::jwe::GeneratedKey::p256().private_pem);
    let s = load_text(&with(&format!("dpop = true\ndpop_key_file = {:?}", pem.path()))).unwrap();
    assert_eq!(s.oidc.dpop.mode, DpopMode::On);
    assert_eq!(s.oidc.dpop.key.as_ref().map(|k| k.algs()), Some(vec!["ES256"]));
    assert!(!format!("{s:?}").contains("PRIVATE"), "no key material in Debug");
    let e = load_text(&with("dpop = true\nforward_access_token = true")).unwrap_err();
    assert_eq!(keys(&e), ["oidc.dpop"]);
    assert!(e.to_string().contains("oidc.forward_access_token"), "the error names both keys: {e}");
    let env_too =
        load(file(".toml", &with("forward_access_token = true")).path(), &env(&[("IDGATE_OIDC__DPOP", "true")]));
    assert_eq!(keys(&env_too.unwrap_err()), ["oidc.dpop"], "the environment is checked the same way");
    let not_a_key = file(".pem", "hello");
    for (line, why) in [
        (format!("dpop_key_file = {:?}", not_a_key.path()), "no private key"),
        ("dpop_key_file = \"/nonexistent/dpop.pem\"".to_owned(), "/nonexistent/dpop.pem"),
        (format!("dpop = false\ndpop_key_file = {:?}", pem.path()), "oidc.dpop = false"),
    ] {
        let e = load_text(&with(&line)).unwrap_err();
        assert_eq!(keys(&e), ["oidc.dpop_key_file"], "{line}");
        assert!(e.to_string().contains(why), "{line}: {e}");
    }
}

/// Issue 14: `[assertion]` key files are read at load; an `alg` the key cannot sign, an unreadable key and claims
/// idgate sets itself (or token members) are refused, naming the key.
#[test]
fn assertion_keys_and_claims_are_checked_at_load() {
    let load_text = |t: &str| load(file(".toml", t).path(), &HashMap::new());
    let with = |extra: &str| format!("{GOOD}\n[assertion]\n{extra}\n");
    let ec = file(".pem", include_str!("../signing/testdata/ec-sec1.pem"));
    let rsa = file(".pem", include_str!("../signing/testdata/rsa-pkcs1.pem"));
    let s = load_text(&with(&format!(
        "enabled = true\nkey_file = {:?}\nprevious_key_files = [{:?}]\naudience = \"app\"",
        ec.path(),
        rsa.path()
    )))
    .unwrap();
    let a = &s.assertion;
    assert!(a.enabled && a.key.as_ref().is_some_and(|k| k.0.alg() == crate::signing::SigningAlg::Es256));
    assert_eq!(a.previous_keys.len(), 1);
    assert_eq!(
        (a.header.as_str(), a.lifetime.as_secs(), a.audience.as_deref()),
        ("x-idgate-assertion", 300, Some("app"))
    );
    assert_eq!(a.claims, ["sub", "email", "email_verified", "name", "idp_iss"]);
    assert!(!format!("{s:?}").contains("PRIVATE"), "no key material in Debug");
    let s = load_text(&with(&format!("enabled = true\nkey_file = {:?}\nalg = \"PS256\"", rsa.path()))).unwrap();
    assert_eq!(s.assertion.key.unwrap().0.alg(), crate::signing::SigningAlg::Ps256);
    assert!(!load_text(GOOD).unwrap().assertion.enabled, "off by default");
    let cases = [
        (format!("key_file = {:?}\nalg = \"RS256\"", ec.path()), "assertion.alg", "RS256 does not fit an EC P-256 key"),
        (format!("key_file = {:?}\nalg = \"ES256\"", rsa.path()), "assertion.alg", "ES256 does not fit an RSA key"),
        ("alg = \"RS256\"".into(), "assertion.alg", "generated key is EC P-256"),
        ("alg = \"HS256\"".into(), "assertion.alg", "expected RS256, PS256 or ES256"),
        ("key_file = \"/nonexistent/k.pem\"".into(), "assertion.key_file", "/nonexistent/k.pem"),
        ("previous_key_files = [\"/nonexistent/old.pem\"]".into(), "assertion.previous_key_files[0]", "cannot read"),
        ("claims = [\"sub\", \"exp\"]".into(), "assertion.claims", "sets iss, aud"),
        ("claims = [\"nonce\"]".into(), "assertion.claims", "never copied"),
        ("claims = [\"refresh_token\"]".into(), "assertion.claims", "never copied"),
        ("lifetime_secs = 86400".into(), "assertion.lifetime_secs", "between 60 and 3600"),
        ("header = \"Authorization\"".into(), "assertion.header", "managed by the proxy"),
        ("header = \"bad header\"".into(), "assertion.header", "not a valid HTTP header name"),
        ("audience = \"\"".into(), "assertion.audience", "non-empty"),
    ];
    for (line, key, why) in cases {
        let e = load_text(&with(&line)).unwrap_err();
        assert_eq!(keys(&e), [key], "{line}");
        assert!(e.to_string().contains(why), "{line}: {e}");
    }
}

// === session.redis_url: Sentinel and Cluster forms (issue 16) ===

#[test]
fn redis_url_sentinel_and_cluster_forms_load_and_bad_ones_name_the_key_not_the_password() {
    let f = file(".toml", GOOD);
    for url in ["redis+sentinel://:pw@s1:26379,s2:26379,s3:26379/mymaster", "rediss+cluster://n1:7000,n2:7001"] {
        let vars = env(&[("IDGATE_SESSION__STORE", "redis"), ("IDGATE_SESSION__REDIS_URL", url)]);
        let s = load(f.path(), &vars).unwrap();
        assert_eq!(s.session.store, StoreKind::Redis { url: Secret::new(url) });
        assert!(!format!("{s:?}").contains(":pw@"), "Debug redacts the URL");
    }
    let vars =
        env(&[("IDGATE_SESSION__STORE", "redis"), ("IDGATE_SESSION__REDIS_URL", "redis+sentinel://:hunter2@s1,s2")]);
    let e = load(f.path(), &vars).unwrap_err();
    assert_eq!(keys(&e), ["session.redis_url"]);
    let text = e.to_string();
    assert!(text.contains("names no service"), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
}

#[test]
fn ext_authz_listener_is_checked() {
    let f = file(".toml", &format!("{GOOD}[ext_authz]\ngrpc_listen = \"127.0.0.1:9191\"\n"));
    let s = load(f.path(), &HashMap::new()).unwrap();
    assert_eq!(s.ext_authz.grpc_listen, Some("127.0.0.1:9191".parse().unwrap()));
    assert!(s.ext_authz.grpc_tls.is_none());
    assert_eq!(
        load(file(".toml", GOOD).path(), &HashMap::new()).unwrap().ext_authz.grpc_listen,
        None,
        "off by default"
    );
    let bad = format!("{GOOD}[ext_authz]\ngrpc_listen = \"127.0.0.1:9180\"\ngrpc_tls_cert_file = \"/x.pem\"\n");
    let e = load(file(".toml", &bad).path(), &HashMap::new()).unwrap_err();
    assert_eq!(keys(&e), ["ext_authz.grpc_listen", "ext_authz.grpc_tls_key_file"], "{e}");
    let e = load(f.path(), &env(&[("IDGATE_EXT_AUTHZ__GRPC_LISTEN", "nowhere")])).unwrap_err();
    assert_eq!(keys(&e), ["ext_authz.grpc_listen"], "{e}");
}

#[test]
fn preserve_post_max_bytes_defaults_to_64_kib_and_is_bounded() {
    let f = file(".toml", GOOD);
    let s = load(f.path(), &HashMap::new()).unwrap();
    assert_eq!(s.session.preserve_post_max_bytes, 64 * 1024);
    let off = load(f.path(), &env(&[("IDGATE_SESSION__PRESERVE_POST_MAX_BYTES", "0")])).unwrap();
    assert_eq!(off.session.preserve_post_max_bytes, 0, "0 turns it off");
    let e = load(f.path(), &env(&[("IDGATE_SESSION__PRESERVE_POST_MAX_BYTES", "2000000")])).unwrap_err();
    assert_eq!(keys(&e), ["session.preserve_post_max_bytes"]);
}

#[test]
fn preserve_post_store_bytes_defaults_to_64_mib() {
    let f = file(".toml", GOOD);
    let s = load(f.path(), &HashMap::new()).unwrap();
    assert_eq!(s.session.preserve_post_store_bytes, 64 << 20);
    let set = load(f.path(), &env(&[("IDGATE_SESSION__PRESERVE_POST_STORE_BYTES", "1000")])).unwrap();
    assert_eq!(set.session.preserve_post_store_bytes, 1000);
    let e = load(f.path(), &env(&[("IDGATE_SESSION__PRESERVE_POST_STORE_BYTES", "2199023255553")])).unwrap_err();
    assert_eq!(keys(&e), ["session.preserve_post_store_bytes"]);
}

/// `private_key_jwt` (issue 13): the key is read at load, and every inconsistent combination names its key.
#[test]
fn private_key_jwt_settings_are_loaded_and_checked() {
    use crate::{oidc::client_auth::AssertionAudience, signing::SigningAlg};
    let keyless = GOOD.replace("client_secret = \"s3cret\"\n", "");
    let with = |base: &str, extra: &str| base.replace("[session]", &format!("{extra}\n[session]"));
    let load_text = |t: &str| load(file(".toml", t).path(), &HashMap::new());
    let ec = file(".pem", &crate::id_token::jwe::GeneratedKey::p256().private_pem);
    let rsa = file(".pem", &crate::id_token::jwe::GeneratedKey::rsa().private_pem);
    let jwt = |path: &std::path::Path, extra: &str| {
        with(&keyless, &format!("token_auth_method = \"private_key_jwt\"\nclient_key_file = {path:?}\n{extra}"))
    };
    let s = load_text(&jwt(ec.path(), "par = true")).unwrap();
    assert_eq!(s.oidc.token_auth_method, TokenAuthMethod::PrivateKeyJwt);
    assert_eq!(s.oidc.client_key.as_ref().unwrap().0.alg(), SigningAlg::Es256);
    assert_eq!(s.oidc.client_assertion_audience, AssertionAudience::Issuer);
    assert!(s.oidc.par);
    assert!(!format!("{s:?}").contains("PRIVATE"), "no key material in Debug");
    let s = load_text(&jwt(rsa.path(), "client_key_alg = \"PS256\"\nclient_assertion_audience = \"token_endpoint\""))
        .unwrap();
    assert_eq!(s.oidc.client_key.as_ref().unwrap().0.alg(), SigningAlg::Ps256);
    assert_eq!(s.oidc.client_assertion_audience, AssertionAudience::TokenEndpoint);
    assert!(!load_text(GOOD).unwrap().oidc.par, "PAR is off by default");

    let not_a_key = file(".pem", "hello");
    let ec_path = format!("{:?}", ec.path());
    let cases = [
        (with(&keyless, "token_auth_method = \"private_key_jwt\""), "oidc.client_key_file", "missing"),
        (
            with(GOOD, &format!("token_auth_method = \"private_key_jwt\"\nclient_key_file = {ec_path}")),
            "oidc.client_secret",
            "must not be set with token_auth_method = private_key_jwt",
        ),
        (with(GOOD, &format!("client_key_file = {ec_path}")), "oidc.client_key_file", "not private_key_jwt"),
        (jwt(std::path::Path::new("/nonexistent/client.pem"), ""), "oidc.client_key_file", "/nonexistent/client.pem"),
        (jwt(not_a_key.path(), ""), "oidc.client_key_file", "no private key"),
        (jwt(ec.path(), "client_key_alg = \"RS256\""), "oidc.client_key_file", "RS256 does not fit"),
        (jwt(ec.path(), "client_key_alg = \"HS256\""), "oidc.client_key_alg", "expected RS256, PS256 or ES256"),
        (jwt(ec.path(), "client_assertion_audience = \"both\""), "oidc.client_assertion_audience", "\"both\""),
        (with(&keyless, "token_auth_method = \"tls_client_auth\""), "oidc.token_auth_method", "private_key_jwt"),
    ];
    for (text, key, why) in cases {
        let e = load_text(&text).unwrap_err();
        assert_eq!(keys(&e), [key], "{text}");
        assert!(e.to_string().contains(why), "{key}: {e}");
    }
}

#[test]
fn upstream_issuer_header_is_checked_and_defaults_to_x_auth_request_issuer() {
    let s = load(file(".toml", GOOD).path(), &HashMap::new()).unwrap();
    assert_eq!(s.upstream.issuer_header.as_str(), "x-auth-request-issuer");
    let renamed = GOOD.replacen("[upstream]\n", "[upstream]\nissuer_header = \"X-Idp-Name\"\n", 1);
    let s = load(file(".toml", &renamed).path(), &HashMap::new()).unwrap();
    assert_eq!(s.upstream.issuer_header.as_str(), "x-idp-name");
    for (name, why) in [("Cookie", "idgate needs this header"), ("Host", "idgate needs"), ("bad name", "not a valid")] {
        let text = GOOD.replacen("[upstream]\n", &format!("[upstream]\nissuer_header = \"{name}\"\n"), 1);
        let e = load(file(".toml", &text).path(), &HashMap::new()).unwrap_err();
        assert_eq!(keys(&e), ["upstream.issuer_header"], "{name}");
        assert!(e.problems[0].why.contains(why), "{name}: {e}");
    }
}
