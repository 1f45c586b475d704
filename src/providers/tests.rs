use std::{collections::HashMap, io::Write, sync::Arc, time::Duration};

use http::{HeaderMap, HeaderValue};

use super::*;
use crate::telemetry::metrics::Metrics;

const CONFIG: &str = r#"
[upstream]
url = "http://127.0.0.1:8080"
[session]
secret = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
[[providers]]
name = "staff"
hosts = ["app.example.com", "*.staff.example.com"]
issuer = "https://staff.example.com"
client_id = "a"
redirect_url = "https://app.example.com/oauth2/callback"
[[providers]]
name = "partners"
hosts = ["partners.example.com"]
issuer = "https://partners.example.com"
client_id = "b"
redirect_url = "https://partners.example.com/oauth2/callback"
[[providers]]
name = "guests"
issuer = "https://guests.example.com"
client_id = "c"
redirect_url = "https://app.example.com/oauth2/callback"
[[routes]]
prefix = "/admin"
providers = ["staff"]
[[routes]]
prefix = "/shared"
providers = ["partners", "guests"]
[[routes]]
prefix = "/other"
"#;

fn registry(text: &str) -> Registry {
    let mut f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    f.write_all(text.as_bytes()).unwrap();
    let settings = crate::config::load(f.path(), &HashMap::new()).unwrap();
    let http = crate::client::build(Duration::from_secs(1));
    Registry::new(&settings, |_, oidc| {
        Registry::loaded(Provider::new(oidc.clone(), http.clone(), Arc::new(Metrics::default())))
    })
}

fn names(r: &Registry, a: Allowed) -> Vec<&str> {
    a.iter().map(|i| r.entry(i).unwrap().name.as_str()).collect()
}

#[test]
fn selection_is_route_then_host_then_all() {
    let r = registry(CONFIG);
    assert!(r.is_multi());
    assert_eq!(names(&r, r.allowed(Some(0), Some("partners.example.com"))), ["staff"], "the route wins over the host");
    assert_eq!(names(&r, r.allowed(Some(1), None)), ["partners", "guests"]);
    assert_eq!(
        names(&r, r.allowed(Some(2), Some("partners.example.com"))),
        ["partners"],
        "a route without providers: by host"
    );
    assert_eq!(names(&r, r.allowed(None, Some("app.example.com"))), ["staff"]);
    assert_eq!(names(&r, r.allowed(None, Some("eu.staff.example.com"))), ["staff"], "wildcard");
    assert_eq!(
        names(&r, r.allowed(None, Some("staff.example.com"))),
        ["staff", "partners", "guests"],
        "a wildcard does not match its base"
    );
    assert_eq!(
        names(&r, r.allowed(None, Some("evilstaff.example.com"))).len(),
        3,
        "a wildcard matches whole labels only"
    );
    assert_eq!(names(&r, r.allowed(None, Some("elsewhere.example.com"))).len(), 3, "no host entry: all");
    assert_eq!(names(&r, r.allowed(None, None)).len(), 3);
    assert_eq!(r.allowed(Some(0), None).only(), Some(0));
    assert_eq!(r.allowed(None, None).only(), None);
}

#[test]
fn sessions_count_only_where_their_provider_is_allowed() {
    let r = registry(CONFIG);
    let staff_only = r.allowed(Some(0), None);
    assert_eq!(r.check_session(Some("staff"), staff_only), Ok(0));
    assert_eq!(r.check_session(Some("partners"), staff_only), Err(Mismatch::NotAllowed("partners".into())));
    assert_eq!(r.check_session(Some("removed"), staff_only), Err(Mismatch::Unknown));
    assert_eq!(r.check_session(None, staff_only), Err(Mismatch::Unknown), "a session from before [[providers]]");
    assert_eq!(r.record(1), Some("partners"));
}

#[test]
fn one_issuer_records_nothing_and_allows_its_sessions_everywhere() {
    let single = "[upstream]\nurl = \"http://127.0.0.1:8080\"\n[session]\nsecret = \"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\"\n[oidc]\nissuer = \"https://i.example.com\"\nclient_id = \"c\"\nredirect_url = \"https://a.example.com/oauth2/callback\"\n";
    let r = registry(single);
    assert!(!r.is_multi());
    let all = r.allowed(None, Some("anything"));
    assert_eq!(all.only(), Some(0));
    assert_eq!(r.check_session(None, all), Ok(0));
    assert_eq!(r.check_session(Some("staff"), all), Err(Mismatch::Unknown), "a session recording a provider");
    assert_eq!(r.record(0), None);
    let mut h = HeaderMap::new();
    r.apply_issuer_header(&mut h, 0);
    assert!(h.is_empty(), "no issuer header with [oidc]");
    assert_eq!(r.host(&h, Some("a.example.com"), true), None, "the host is not even read");
}

#[test]
fn the_host_is_read_from_x_forwarded_host_only_from_trusted_peers() {
    let mut h = HeaderMap::new();
    h.insert("host", HeaderValue::from_static("App.Example.com:8443"));
    h.insert("x-forwarded-host", HeaderValue::from_static("partners.example.com, proxy.internal"));
    assert_eq!(request_host(&h, None, true).as_deref(), Some("partners.example.com"));
    assert_eq!(request_host(&h, None, false).as_deref(), Some("app.example.com"), "forged from an untrusted peer");
    h.remove("x-forwarded-host");
    h.insert(
        "forwarded",
        HeaderValue::from_static("for=10.0.0.1;Host=\"Partners.example.com:443\";proto=https, host=x"),
    );
    assert_eq!(request_host(&h, None, true).as_deref(), Some("partners.example.com"), "RFC 7239 host=");
    assert_eq!(request_host(&h, None, false).as_deref(), Some("app.example.com"), "not from an untrusted peer");
    h.remove("forwarded");
    h.insert("host", HeaderValue::from_static("[::1]:4180"));
    assert_eq!(request_host(&h, None, true).as_deref(), Some("::1"));
    h.insert("host", HeaderValue::from_static("app.example.com."));
    assert_eq!(request_host(&h, None, false).as_deref(), Some("app.example.com"));
    h.remove("host");
    assert_eq!(request_host(&h, Some("h2.example.com:443"), false).as_deref(), Some("h2.example.com"));
    assert_eq!(request_host(&h, None, false), None);
}

#[test]
fn the_issuer_header_names_the_provider() {
    let r = registry(CONFIG);
    let mut h = HeaderMap::new();
    h.insert(ISSUER_HEADER, HeaderValue::from_static("forged"));
    r.apply_issuer_header(&mut h, 1);
    assert_eq!(h.get_all(ISSUER_HEADER).iter().collect::<Vec<_>>(), ["partners"]);
    assert_eq!(r.by_issuer("https://guests.example.com").collect::<Vec<_>>(), [2]);
    assert_eq!(r.by_issuer("https://nobody.example.com").count(), 0);
}

#[test]
fn upstream_issuer_header_renames_the_issuer_header() {
    let text = CONFIG.replacen("[upstream]\n", "[upstream]\nissuer_header = \"X-Idp\"\n", 1);
    let r = registry(&text);
    let mut h = HeaderMap::new();
    r.apply_issuer_header(&mut h, 2);
    assert_eq!(h.get("x-idp").map(|v| v.as_bytes()), Some(&b"guests"[..]));
    assert!(h.get(ISSUER_HEADER).is_none(), "the default name is not written as well");
}
