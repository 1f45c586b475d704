use std::{collections::HashMap, io::Write};

use crate::config::{ConfigError, load};

const BASE: &str = r#"
[upstream]
url = "http://127.0.0.1:8080"
[session]
secret = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
"#;

const TWO: &str = r#"
[[providers]]
name = "staff"
title = "Employees"
hosts = ["App.example.com", "*.staff.example.com"]
issuer = "https://staff-idp.example.com"
client_id = "staff-app"
client_secret = "s1"
redirect_url = "https://app.example.com/oauth2/callback"
scopes = ["openid", "email"]

[[providers]]
name = "partners"
issuer = "https://partners-idp.example.com"
client_id = "partner-app"
redirect_url = "https://partners.example.com/oauth2/callback"

[[routes]]
prefix = "/admin"
providers = ["staff"]
"#;

fn load_text(text: &str) -> Result<crate::config::Settings, ConfigError> {
    let mut f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    f.write_all(format!("{BASE}{text}").as_bytes()).unwrap();
    load(f.path(), &HashMap::new())
}

fn problems(text: &str) -> Vec<(String, String)> {
    load_text(text).unwrap_err().problems.into_iter().map(|p| (p.key, p.why)).collect()
}

#[test]
fn two_providers_load_with_every_oidc_key_parsed_per_provider() {
    let s = load_text(TWO).unwrap();
    assert_eq!(s.providers.len(), 2);
    let (staff, partners) = (&s.providers[0], &s.providers[1]);
    assert_eq!((staff.name.as_str(), staff.title.as_str()), ("staff", "Employees"));
    assert_eq!(staff.hosts, ["app.example.com", "*.staff.example.com"], "hosts are lowercased");
    assert_eq!(staff.oidc.scopes, ["openid", "email"]);
    assert_eq!(staff.oidc.client_secret.as_ref().unwrap().expose(), "s1");
    assert_eq!(partners.title, "partners", "the title defaults to the name");
    assert_eq!(partners.oidc.scopes, ["openid", "profile", "email"], "defaults apply per provider");
    assert_eq!(s.oidc, staff.oidc, "Settings::oidc is the first provider's");
    assert_eq!(s.callback_path(), "/oauth2/callback");
    assert_eq!(s.routes[0].providers, ["staff"]);
}

#[test]
fn oidc_together_with_providers_is_refused_naming_both() {
    let text = format!("[oidc]\nissuer = \"https://i.example.com\"\n{TWO}");
    let p = problems(&text);
    assert!(p.iter().any(|(k, why)| k == "oidc" && why.contains("[[providers]]")), "{p:?}");
}

#[test]
fn duplicate_and_malformed_names_are_refused() {
    let dup = TWO.replace("name = \"partners\"", "name = \"staff\"");
    let p = problems(&dup);
    assert!(p.iter().any(|(k, why)| k == "providers[1].name" && why.contains("providers[0]")), "{p:?}");
    for bad in ["Staff", "staff team", "st/aff", ""] {
        let p = problems(&TWO.replace("name = \"staff\"", &format!("name = {bad:?}")));
        assert!(p.iter().any(|(k, _)| k == "providers[0].name"), "{bad:?}: {p:?}");
    }
    let p = problems(&TWO.replace("name = \"staff\"\n", ""));
    assert!(p.iter().any(|(k, why)| k == "providers[0].name" && why.contains("missing")), "{p:?}");
}

#[test]
fn oidc_problems_are_named_for_their_provider() {
    let p = problems(
        &TWO.replace("client_id = \"partner-app\"\n", "")
            .replace("scopes = [\"openid\", \"email\"]", "scopes = [\"email\"]"),
    );
    assert!(p.iter().any(|(k, _)| k == "providers[1].client_id"), "{p:?}");
    assert!(p.iter().any(|(k, _)| k == "providers[0].scopes"), "{p:?}");
    let p =
        problems(&TWO.replace(
            "issuer = \"https://partners-idp.example.com\"",
            "issuer = \"https://p.example.com\"\nbogus_key = 1",
        ));
    assert!(p.iter().any(|(k, why)| k == "config" && why.contains("bogus_key")), "unknown keys are refused: {p:?}");
}

#[test]
fn hosts_routes_and_callback_paths_are_checked() {
    let p = problems(&TWO.replace("\"*.staff.example.com\"", "\"app.example.com:443\", \"*.\", \"a/b\""));
    let bad: Vec<&str> = p.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(bad, ["providers[0].hosts[1]", "providers[0].hosts[2]", "providers[0].hosts[3]"], "{p:?}");
    let p = problems(&TWO.replace("providers = [\"staff\"]", "providers = [\"staff\", \"nobody\"]"));
    assert!(p.iter().any(|(k, why)| k == "routes[0].providers" && why.contains("nobody")), "{p:?}");
    let p = problems(&TWO.replace("partners.example.com/oauth2/callback", "partners.example.com/auth/cb"));
    assert!(p.iter().any(|(k, why)| k == "providers[1].redirect_url" && why.contains("callback path")), "{p:?}");
    let single = "[oidc]\nissuer = \"https://i.example.com\"\nclient_id = \"c\"\nredirect_url = \"https://a.example.com/oauth2/callback\"\n[[routes]]\nprefix = \"/x\"\nproviders = [\"staff\"]\n";
    let p = problems(single);
    assert!(p.iter().any(|(k, why)| k == "routes[0].providers" && why.contains("no [[providers]]")), "{p:?}");
}

#[test]
fn provider_secret_files_are_read_per_provider() {
    let mut secret = tempfile::NamedTempFile::new().unwrap();
    secret.write_all(b"from-file\n").unwrap();
    let text = TWO.replace(
        "client_id = \"partner-app\"",
        &format!("client_id = \"partner-app\"\nclient_secret_file = {:?}", secret.path().to_str().unwrap()),
    );
    let s = load_text(&text).unwrap();
    assert_eq!(s.providers[1].oidc.client_secret.as_ref().unwrap().expose(), "from-file");
    let both = TWO.replace(
        "client_secret = \"s1\"",
        &format!("client_secret = \"s1\"\nclient_secret_file = {:?}", secret.path().to_str().unwrap()),
    );
    let p = problems(&both);
    assert!(p.iter().any(|(k, _)| k == "providers[0].client_secret_file"), "{p:?}");
}
