use serde_json::json;

use super::*;
use crate::dev_issuer::{DevAlg, SigningKey, keys::sign_hs256};

const NOW: i64 = 1_800_000_000;
const ISS: &str = "https://issuer.example.com";

fn want(typ_required: bool) -> (Vec<String>, bool) {
    (vec!["https://api.example.com".into()], typ_required)
}

fn check(key: &SigningKey, token: &str, typ_required: bool) -> Result<Claims, Refusal> {
    let keys = KeySet::from_jwks(json!({"keys": [key.jwk()]}).to_string().as_bytes()).unwrap();
    let (audiences, typ_required) = want(typ_required);
    let w = Want { issuer: ISS, audiences: &audiences, typ_required, leeway: 60 };
    validate_jwt(token, &keys, &[Algorithm::RS256, Algorithm::ES256], &w, NOW)
}

fn claims() -> Value {
    json!({"iss": ISS, "sub": "u1", "aud": ["https://api.example.com", "other"], "iat": NOW, "exp": NOW + 600,
           "scope": "read write", "client_id": "cli", "jti": "j1"})
}

fn at(key: &SigningKey, c: &Value) -> String {
    key.sign_with_header(&json!({"alg": key.alg.name(), "kid": key.kid, "typ": "at+jwt"}), c)
}

#[test]
fn a_jwt_access_token_is_accepted_and_each_bad_one_refused_with_its_reason() {
    let key = SigningKey::generate(DevAlg::RS256);
    assert_eq!(check(&key, &at(&key, &claims()), true).unwrap().sub(), "u1");
    let with = |k: &str, v: Value| {
        let mut c = claims();
        c[k] = v;
        c
    };
    let other = SigningKey::generate(DevAlg::RS256);
    let none =
        format!("{}.", crate::dev_issuer::keys::signing_input(&json!({"alg": "none", "typ": "at+jwt"}), &claims()));
    let hs = sign_hs256(&json!({"alg": "HS256", "typ": "at+jwt", "kid": key.kid}), &claims(), &key.public_key_bytes());
    let cases: Vec<(&str, String)> = vec![
        // `none` has no signature: refused as malformed (an empty part) before its alg is read; with one, by alg.
        ("malformed", none.clone()),
        ("alg_not_allowed", format!("{none}c2ln")),
        ("alg_not_allowed", hs),
        ("wrong_typ", key.sign(&claims())),
        ("wrong_typ", key.sign_with_header(&json!({"alg": "RS256", "kid": key.kid}), &claims())),
        ("wrong_audience", at(&key, &with("aud", json!("https://elsewhere.example.com")))),
        ("wrong_audience", at(&key, &with("aud", json!("cli")))),
        ("wrong_issuer", at(&key, &with("iss", json!("https://evil.example.com")))),
        ("expired", at(&key, &with("exp", json!(NOW - 61)))),
        ("not_yet_valid", at(&key, &with("nbf", json!(NOW + 120)))),
        ("issued_in_future", at(&key, &with("iat", json!(NOW + 120)))),
        ("unknown_key", at(&other, &claims())),
        ("missing_claim", at(&key, &with("sub", json!("")))),
        ("malformed", at(&key, &with("aud", json!(["https://api.example.com", 1])))),
    ];
    for (reason, token) in cases {
        let got = check(&key, &token, true).unwrap_err();
        assert_eq!(got.reason(), reason, "{got}");
    }
    // An issuer that omits typ: accepted once typ is not required, still refused for everything else.
    assert!(check(&key, &key.sign(&claims()), false).is_ok());
    assert_eq!(check(&key, &key.sign(&with("aud", json!("cli"))), false).unwrap_err().reason(), "wrong_audience");
}

#[test]
fn introspection_answers_are_checked() {
    let (audiences, _) = want(true);
    let w = Want { issuer: ISS, audiences: &audiences, typ_required: true, leeway: 0 };
    let ok = json!({"active": true, "sub": "u1", "aud": "https://api.example.com", "exp": NOW + 100, "scope": "read"});
    let m = |v: Value| v.as_object().unwrap().clone();
    let (c, exp) = check_introspection(m(ok.clone()), &w, NOW).unwrap();
    assert_eq!((c.sub(), exp, c.get("iss")), ("u1", Some(NOW + 100), Some(&json!(ISS))));
    let with = |k: &str, v: Value| {
        let mut c = ok.clone();
        c[k] = v;
        m(c)
    };
    for (reason, answer) in [
        ("inactive", with("active", json!(false))),
        ("inactive", with("active", json!("true"))),
        ("wrong_typ", with("token_type", json!("refresh_token"))),
        ("wrong_audience", with("aud", json!("other"))),
        ("wrong_issuer", with("iss", json!("https://evil.example.com"))),
        ("expired", with("exp", json!(NOW))),
    ] {
        assert_eq!(check_introspection(answer, &w, NOW).unwrap_err().reason(), reason);
    }
}

#[test]
fn only_one_bearer_credential_is_read() {
    let h = |values: &[&str]| {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(header::AUTHORIZATION, v.parse().unwrap());
        }
        h
    };
    assert_eq!(presented(&h(&["Bearer abc"])).unwrap(), Some("abc"));
    assert_eq!(presented(&h(&["bearer  abc "])).unwrap(), Some("abc"));
    assert_eq!(presented(&h(&["Basic dXNlcjpwdw=="])).unwrap(), None);
    assert_eq!(presented(&h(&[])).unwrap(), None);
    for bad in [&["Bearer a", "Bearer b"][..], &["Bearer a b"]] {
        assert_eq!(presented(&h(bad)).map_err(|e| e.reason()), Err("malformed"), "{bad:?}");
    }
}

/// A gate's bearer checker and provider in front of a development issuer whose clock stands at `NOW`.
mod against_an_issuer {
    use std::{io::Write, sync::Arc};

    use super::*;
    use crate::{
        clock::{Clock, TestClock},
        config::{Settings, TokenAuthMethod},
        dev_issuer::{DevClient, DevIssuer},
        telemetry::metrics::Metrics,
    };

    const API: &str = "https://api.example.com";

    fn settings(issuer: &str, introspect: bool) -> Settings {
        let toml = format!(
            "[server]\nlisten = \"127.0.0.1:4180\"\n[admin]\nlisten = \"127.0.0.1:9180\"\n\
             [upstream]\nurl = \"http://127.0.0.1:8080\"\n\
             [oidc]\nissuer = \"{issuer}\"\nclient_id = \"app\"\nclient_secret = \"s\"\n\
             redirect_url = \"https://app.example.com/oauth2/callback\"\napi_audiences = [\"{API}\"]\n\
             introspect_opaque_tokens = {introspect}\nintrospection_cache_secs = 60\n\
             [session]\nsecret = \"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\"\n"
        );
        let mut f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
        f.write_all(toml.as_bytes()).unwrap();
        crate::config::load(f.path(), &Default::default()).unwrap()
    }

    async fn setup(introspect: bool) -> (DevIssuer, Provider, Bearer) {
        let clock = Arc::new(TestClock::default());
        clock.set(NOW);
        let client = DevClient {
            client_id: "app".into(),
            client_secret: "s".into(),
            redirect_uris: vec!["https://app.example.com/oauth2/callback".into()],
            token_auth_method: TokenAuthMethod::ClientSecretBasic,
            post_logout_redirect_uris: vec![],
            jwks: None,
            jwks_uri: None,
        };
        let clock: Arc<dyn Clock> = clock;
        let issuer =
            DevIssuer::start("127.0.0.1:0".parse().unwrap(), DevAlg::RS256, client, Arc::clone(&clock)).await.unwrap();
        let s = settings(issuer.issuer(), introspect);
        let http = crate::client::build(std::time::Duration::from_secs(2));
        let provider = Provider::new(s.oidc.clone(), http, Arc::new(Metrics::default())).with_clock(clock);
        provider.load().await.unwrap();
        let bearer = Bearer::new(&s.oidc).unwrap();
        (issuer, provider, bearer)
    }

    #[tokio::test]
    async fn a_jwt_is_validated_against_the_issuers_keys_and_an_opaque_token_is_not() {
        let (issuer, provider, bearer) = setup(false).await;
        assert_eq!(format!("{bearer:?}"), "Bearer { audiences: [\"https://api.example.com\"], .. }");
        let jwt = issuer.access_token("alice", API, "read", |_| {});
        let c = bearer.authenticate(&provider, &jwt, NOW).await.unwrap();
        assert_eq!((c.sub(), c.get("scope")), ("dev|alice", Some(&json!("read"))));
        // The issuer rotates its key: the new kid is fetched once, then the token opens.
        issuer.rotate_key(DevAlg::RS256, false);
        let jwt = issuer.access_token("bob", API, "read", |_| {});
        assert_eq!(bearer.authenticate(&provider, &jwt, NOW).await.unwrap().sub(), "dev|bob");
        // Without introspection, an opaque token (not three parts) is refused as such, not parsed as a JWT.
        let opaque = issuer.opaque_token("alice", API, "read", |_| {});
        assert_eq!(bearer.authenticate(&provider, &opaque, NOW).await.unwrap_err().reason(), "opaque_not_introspected");
        assert_eq!(issuer.request_count("introspect"), 0);
        issuer.stop();
    }

    #[tokio::test]
    async fn an_introspection_answer_is_believed_until_the_cache_second_and_no_longer() {
        let (issuer, provider, bearer) = setup(true).await;
        let opaque = issuer.opaque_token("alice", API, "read", |_| {});
        let c = bearer.authenticate(&provider, &opaque, NOW).await.unwrap();
        assert_eq!((c.sub(), c.get("iss")), ("dev|alice", Some(&json!(issuer.issuer()))));
        assert_eq!(issuer.request_count("introspect"), 1);
        // Believed for introspection_cache_secs (60, before the token's exp at NOW + 600): cached up to NOW + 59.
        assert_eq!(bearer.authenticate(&provider, &opaque, NOW + 59).await.unwrap().sub(), "dev|alice");
        assert_eq!(issuer.request_count("introspect"), 1, "answered from the cache");
        assert_eq!(bearer.authenticate(&provider, &opaque, NOW + 60).await.unwrap().sub(), "dev|alice");
        assert_eq!(issuer.request_count("introspect"), 2, "at the cache's last second the issuer is asked again");
        // A JWT is never introspected; an inactive opaque token is refused with its reason.
        let jwt = issuer.access_token("bob", API, "read", |_| {});
        assert_eq!(bearer.authenticate(&provider, &jwt, NOW).await.unwrap().sub(), "dev|bob");
        let gone = issuer.opaque_token("carol", API, "read", |c| {
            c.insert("active".into(), json!(false));
        });
        assert_eq!(bearer.authenticate(&provider, &gone, NOW).await.unwrap_err().reason(), "inactive");
        assert_eq!(issuer.request_count("introspect"), 3);
        issuer.stop();
    }
}
