use std::sync::atomic::AtomicUsize;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use http::{HeaderValue, Method, StatusCode};
use serde_json::Value;

use super::*;

fn part(jws: &str, i: usize) -> Value {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(jws.split('.').nth(i).unwrap()).unwrap()).unwrap()
}

fn on() -> Dpop {
    Dpop::new(&DpopSettings { mode: DpopMode::On, key: None }, false)
}

fn rsa_pem() -> String {
    crate::id_token::jwe::GeneratedKey::rsa().private_pem
}

#[test]
fn proof_carries_the_rfc_9449_members() {
    let d = on();
    let url = "https://op.example.com/token?x=1#frag";
    let p = d.proof(None, &Method::POST, url, None, 1_700_000_000).unwrap();
    let (h, c) = (part(&p, 0), part(&p, 1));
    assert_eq!(h["typ"], "dpop+jwt");
    assert_eq!(h["alg"], "ES256");
    let jwk = h["jwk"].as_object().unwrap();
    assert!(!jwk.contains_key("d"), "the proof carries the public key only");
    assert_eq!(crate::signing::jwk_thumbprint(jwk), d.key.as_ref().unwrap().jkt());
    assert_eq!(c["htm"], "POST");
    assert_eq!(c["htu"], "https://op.example.com/token", "htu without query and fragment");
    assert_eq!(c["iat"], 1_700_000_000);
    assert!(c.get("ath").is_none() && c.get("nonce").is_none());
    let q = d.proof(None, &Method::POST, url, None, 1_700_000_000).unwrap();
    assert_ne!(c["jti"], part(&q, 1)["jti"], "every proof has its own jti");
    assert!(c["jti"].as_str().unwrap().len() >= 16);
}

#[test]
fn resource_proof_hashes_the_access_token_and_uses_the_origins_nonce() {
    let d = on();
    let mut h = HeaderMap::new();
    h.insert(DPOP_NONCE, HeaderValue::from_static("n-1"));
    d.remember_nonce("https://rs.example.com/userinfo", &h);
    let p = d.proof(None, &Method::GET, "https://rs.example.com/other", Some("at-123"), 0).unwrap();
    let c = part(&p, 1);
    assert_eq!(c["nonce"], "n-1", "nonces are kept per origin");
    assert_eq!(c["ath"], URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(&SHA256, b"at-123")));
    let other = d.proof(None, &Method::GET, "https://op.example.com/token", None, 0).unwrap();
    assert!(part(&other, 1).get("nonce").is_none(), "another origin's nonce is not sent");
    h.insert(DPOP_NONCE, HeaderValue::from_static("bad\"nonce"));
    d.remember_nonce("https://rs.example.com/", &h);
    assert_eq!(part(&d.proof(None, &Method::GET, "https://rs.example.com/", None, 0).unwrap(), 1)["nonce"], "n-1");
}

#[test]
fn algorithm_is_one_the_issuer_accepts() {
    let rsa = DpopKey::from_pem(rsa_pem().as_bytes()).unwrap();
    let d = Dpop::new(&DpopSettings { mode: DpopMode::On, key: Some(rsa) }, false);
    let alg = |s: &[&str]| {
        let s: Vec<String> = s.iter().map(|a| (*a).to_owned()).collect();
        d.proof(Some(&s), &Method::POST, "https://op/t", None, 0)
            .map(|p| part(&p, 0)["alg"].as_str().unwrap().to_owned())
    };
    assert_eq!(alg(&["PS256", "ES256"]).unwrap(), "PS256");
    assert_eq!(alg(&["RS256", "PS256"]).unwrap(), "RS256");
    assert_eq!(
        alg(&["ES256", "EdDSA"]),
        Err(DpopError::NoCommonAlg { ours: "RS256, PS256".into(), theirs: "ES256, EdDSA".into() })
    );
    assert_eq!(
        on().proof(Some(&["RS256".into()]), &Method::POST, "https://op/t", None, 0).unwrap_err().to_string(),
        "no DPoP algorithm in common: the key signs ES256, the issuer accepts RS256"
    );
}

#[test]
fn token_type_must_match_whether_a_proof_was_sent() {
    assert!(check_token_type(true, Some("DPoP")).is_ok());
    assert!(check_token_type(true, Some("dpop")).is_ok(), "token_type is case-insensitive (RFC 6749 §5.1)");
    assert!(check_token_type(false, Some("Bearer")).is_ok());
    assert!(check_token_type(false, None).is_ok());
    assert_eq!(
        check_token_type(true, Some("Bearer")),
        Err(DpopError::TokenType { got: "Bearer".into(), sent: "with" })
    );
    assert_eq!(check_token_type(true, None), Err(DpopError::TokenType { got: "".into(), sent: "with" }));
    assert_eq!(
        check_token_type(false, Some("DPoP")),
        Err(DpopError::TokenType { got: "DPoP".into(), sent: "without" })
    );
}

#[test]
fn challenges_are_read_from_json_and_www_authenticate() {
    let h = HeaderMap::new();
    let c = Challenge::of(&h, br#"{"error":"use_dpop_nonce","error_description":"nonce required"}"#).unwrap();
    assert_eq!(c, Challenge { error: "use_dpop_nonce".into(), description: "nonce required".into() });
    let mut h = HeaderMap::new();
    h.insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(r#"DPoP algs="ES256", error="use_dpop_nonce", error_description="fresh nonce""#),
    );
    assert_eq!(
        Challenge::of(&h, b""),
        Some(Challenge { error: "use_dpop_nonce".into(), description: "fresh nonce".into() })
    );
    assert_eq!(Challenge::of(&HeaderMap::new(), b"<html>"), None);
    // A parameter whose name ends in "error", and the description before the error: only `error=` itself counts.
    let mut h = HeaderMap::new();
    h.insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(r#"DPoP error_description="stale", xerror="nope", error=use_dpop_nonce"#),
    );
    assert_eq!(Challenge::of(&h, b""), Some(Challenge { error: "use_dpop_nonce".into(), description: "stale".into() }));
    let demands = |e: &str, d: &str| Challenge { error: e.into(), description: d.into() }.demands_dpop();
    assert!(demands("invalid_dpop_proof", ""));
    assert!(demands("use_dpop_nonce", ""));
    assert!(demands("invalid_grant", "DPoP proof is missing"), "a description naming DPoP");
    assert!(!demands("invalid_grant", "authorization code not found"));
    assert!(!demands("invalid_client", "DPoP"), "a client authentication failure is not a DPoP demand");
}

struct Fake {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Answered for Fake {
    fn status(&self) -> StatusCode {
        self.status
    }
    fn headers(&self) -> &HeaderMap {
        &self.headers
    }
    fn body(&self) -> &[u8] {
        &self.body
    }
}

fn refusal(error: &str, description: &str, nonce: Option<&str>) -> Fake {
    let mut headers = HeaderMap::new();
    if let Some(n) = nonce {
        headers.insert(DPOP_NONCE, HeaderValue::from_str(n).unwrap());
    }
    let body = serde_json::json!({"error": error, "error_description": description}).to_string().into_bytes();
    Fake { status: StatusCode::BAD_REQUEST, headers, body }
}

fn ok() -> Fake {
    Fake { status: StatusCode::OK, headers: HeaderMap::new(), body: b"{}".to_vec() }
}

/// Runs `exchange` against a server answering `answer(attempt, proof)`; returns the outcome and the proofs sent.
async fn run(
    d: &Dpop,
    answer: impl Fn(usize, Option<&str>) -> Fake,
) -> (Result<(StatusCode, bool), DpopError>, Vec<Option<Value>>) {
    run_with(d, None, answer).await
}

/// [`run`] against an issuer advertising `supported` in `dpop_signing_alg_values_supported`.
async fn run_with(
    d: &Dpop,
    supported: Option<&[String]>,
    answer: impl Fn(usize, Option<&str>) -> Fake,
) -> (Result<(StatusCode, bool), DpopError>, Vec<Option<Value>>) {
    let sent = Mutex::new(Vec::new());
    let n = AtomicUsize::new(0);
    let target =
        Target { supported, htm: &Method::POST, htu: "https://op.example.com/token", access_token: None, now: 0 };
    let out = d
        .exchange("token endpoint", target, |proof: Option<String>| {
            let i = n.fetch_add(1, Ordering::SeqCst);
            assert!(i < 3, "exchange made a fourth request: at most three are allowed");
            let a = answer(i, proof.as_deref());
            sent.lock().unwrap().push(proof.map(|p| part(&p, 1)));
            async move { Ok::<_, DpopError>(a) }
        })
        .await
        .map(|(a, with)| (a.status, with));
    (out, sent.into_inner().unwrap())
}

#[tokio::test]
async fn a_nonce_demand_is_retried_once_with_the_nonce() {
    let d = on();
    let (out, sent) = run(&d, |i, _| if i == 0 { refusal("use_dpop_nonce", "", Some("n-1")) } else { ok() }).await;
    assert_eq!(out, Ok((StatusCode::OK, true)));
    assert_eq!(sent.len(), 2);
    assert!(sent[0].as_ref().unwrap().get("nonce").is_none());
    assert_eq!(sent[1].as_ref().unwrap()["nonce"], "n-1");
    // The nonce is kept for the next request.
    let (_, sent) = run(&d, |_, _| ok()).await;
    assert_eq!(sent[0].as_ref().unwrap()["nonce"], "n-1");
}

#[tokio::test]
async fn a_server_demanding_a_new_nonce_every_time_cannot_loop_us() {
    let d = on();
    let (out, sent) = run(&d, |i, _| refusal("use_dpop_nonce", "", Some(&format!("n-{i}")))).await;
    assert_eq!(out, Err(DpopError::NonceLoop { endpoint: "token endpoint" }));
    assert_eq!(sent.len(), 2, "one retry, no more");
    assert!(out.unwrap_err().to_string().contains("again after one retry"));
}

#[tokio::test]
async fn a_nonce_demand_without_a_nonce_is_a_plain_refusal() {
    let (out, sent) = run(&on(), |_, _| refusal("use_dpop_nonce", "", None)).await;
    assert_eq!(out, Ok((StatusCode::BAD_REQUEST, true)));
    assert_eq!(sent.len(), 1);
}

#[tokio::test]
async fn auto_mode_switches_dpop_on_when_the_issuer_demands_it() {
    let d = Dpop::new(&DpopSettings::default(), false);
    assert!(!d.active());
    let demand = |i: usize, proof: Option<&str>| match (i, proof) {
        (0, None) => refusal("invalid_dpop_proof", "DPoP proof is missing", None),
        (_, Some(_)) => ok(),
        _ => refusal("invalid_grant", "unexpected", None),
    };
    let (out, sent) = run(&d, demand).await;
    assert_eq!(out, Ok((StatusCode::OK, true)));
    assert_eq!(sent.len(), 2);
    assert!(sent[0].is_none() && sent[1].is_some());
    assert!(d.active(), "DPoP stays on for the process");
    assert_eq!(d.authorization_jkt(), None, "a generated key is never put in dpop_jkt");
    // An unrelated refusal in auto mode is the caller's: no retry.
    let d = Dpop::new(&DpopSettings::default(), false);
    let (out, sent) = run(&d, |_, _| refusal("invalid_grant", "code not found", None)).await;
    assert_eq!((out, sent.len()), (Ok((StatusCode::BAD_REQUEST, false)), 1));
    assert!(!d.active());
}

#[tokio::test]
async fn a_demand_is_an_error_when_dpop_is_off_or_tokens_are_forwarded() {
    let demand = |_: usize, _: Option<&str>| refusal("invalid_dpop_proof", "DPoP required", None);
    let off = Dpop::new(&DpopSettings { mode: DpopMode::Off, key: None }, false);
    let (out, sent) = run(&off, demand).await;
    assert_eq!((out, sent.len()), (Err(DpopError::RequiredButOff), 1));
    let forwarding = Dpop::new(&DpopSettings::default(), true);
    let (out, sent) = run(&forwarding, demand).await;
    assert_eq!((out, sent.len()), (Err(DpopError::RequiredButForwarding), 1));
    assert!(!forwarding.active());
}

#[tokio::test]
async fn a_configured_key_is_named_in_dpop_jkt_once_active() {
    let key = DpopKey::from_pem(rsa_pem().as_bytes()).unwrap();
    let jkt = key.jkt().to_owned();
    let d = Dpop::new(&DpopSettings { mode: DpopMode::On, key: Some(key.clone()) }, false);
    assert_eq!(d.authorization_jkt(), Some(jkt.as_str()));
    let auto = Dpop::new(&DpopSettings { mode: DpopMode::Auto, key: Some(key) }, false);
    assert_eq!(auto.authorization_jkt(), None, "not before the issuer demanded DPoP");
}

#[tokio::test]
async fn a_bare_invalid_grant_is_not_a_dpop_demand_even_from_an_issuer_advertising_dpop() {
    let algs = ["ES256".to_owned()];
    for mode in [DpopMode::Auto, DpopMode::Off] {
        let d = Dpop::new(&DpopSettings { mode, key: None }, false);
        let (out, sent) = run_with(&d, Some(&algs), |_, proof| match proof {
            None => refusal("invalid_grant", "grant request is invalid", None),
            Some(_) => ok(),
        })
        .await;
        assert_eq!((out, sent.len()), (Ok((StatusCode::BAD_REQUEST, false)), 1), "{mode:?}: no second request");
        assert!(!d.active(), "{mode:?}");
    }
}

#[tokio::test]
async fn a_trial_and_a_nonce_retry_make_three_requests_at_most() {
    let algs = ["ES256".to_owned()];
    let d = Dpop::new(&DpopSettings::default(), false);
    let (out, sent) = run_with(&d, Some(&algs), |i, proof| match proof {
        None => refusal("invalid_dpop_proof", "DPoP proof is missing", None),
        Some(_) => refusal("use_dpop_nonce", "", Some(&format!("n-{i}"))),
    })
    .await;
    assert_eq!(out, Err(DpopError::NonceLoop { endpoint: "token endpoint" }));
    assert_eq!(sent.len(), 3);
    assert!(!d.active());
}

#[test]
fn a_key_file_signs_its_own_algorithms_and_keys_compare_by_thumbprint() {
    let ec = DpopKey::from_pem(crate::id_token::jwe::GeneratedKey::p256().private_pem.as_bytes()).unwrap();
    assert_eq!(ec.algs(), ["ES256"], "a P-256 key signs ES256 only");
    let pem = rsa_pem();
    let rsa = DpopKey::from_pem(pem.as_bytes()).unwrap();
    assert_eq!(rsa.algs(), ["RS256", "PS256"]);
    assert!(rsa == DpopKey::from_pem(pem.as_bytes()).unwrap(), "the same key read twice is the same key");
    assert!(rsa != ec && ec != DpopKey::generate().unwrap());
    let d = Dpop::new(&DpopSettings { mode: DpopMode::On, key: Some(rsa.clone()) }, false);
    assert_eq!(d.jkt(), Some(rsa.jkt()));
    assert_eq!(rsa.jkt().len(), 43, "an RFC 7638 SHA-256 thumbprint, base64url");
    assert_eq!(format!("{d:?}"), "Dpop { mode: On, active: true, .. }");
    let off = Dpop::new(&DpopSettings { mode: DpopMode::Off, key: None }, false);
    assert_eq!((off.jkt(), off.active()), (None, false), "no key is generated when DPoP is off");
    assert_eq!(format!("{off:?}"), "Dpop { mode: Off, active: false, .. }");
}

#[test]
fn a_nonce_is_kept_up_to_512_bytes_and_an_empty_one_is_not() {
    let d = on();
    let nonce_sent = |d: &Dpop| {
        part(&d.proof(None, &Method::POST, "https://op.example.com/token", None, 0).unwrap(), 1)
            .get("nonce")
            .map(|n| n.as_str().unwrap().to_owned())
    };
    let answer = |n: &str| {
        let mut h = HeaderMap::new();
        h.insert(DPOP_NONCE, HeaderValue::from_str(n).unwrap());
        h
    };
    let longest = "n".repeat(512);
    d.remember_nonce("https://op.example.com/token", &answer(&longest));
    assert_eq!(nonce_sent(&d).as_deref(), Some(longest.as_str()));
    d.remember_nonce("https://op.example.com/token", &answer(&"m".repeat(513)));
    assert_eq!(nonce_sent(&d).as_deref(), Some(longest.as_str()), "513 bytes: not kept");
    d.remember_nonce("https://op.example.com/token", &answer(""));
    assert_eq!(nonce_sent(&d).as_deref(), Some(longest.as_str()), "an empty nonce: not kept");
    d.remember_nonce("https://op.example.com/token", &answer("a b"));
    assert_eq!(nonce_sent(&d).as_deref(), Some(longest.as_str()), "a space is not a NQCHAR");
    d.remember_nonce("https://op.example.com/token", &answer("!~"));
    assert_eq!(nonce_sent(&d).as_deref(), Some("!~"), "the NQCHAR range's ends are");
}

#[tokio::test]
async fn in_auto_mode_a_request_that_needed_no_proof_leaves_dpop_off() {
    let d = Dpop::new(&DpopSettings::default(), false);
    let (out, sent) = run(&d, |_, _| ok()).await;
    assert_eq!((out, sent.len()), (Ok((StatusCode::OK, false)), 1));
    assert!(sent[0].is_none());
    assert!(!d.active(), "only a demand switches DPoP on");
}

#[tokio::test]
async fn a_nonce_with_another_refusal_is_kept_but_not_retried() {
    let d = on();
    let (out, sent) = run(&d, |_, _| refusal("invalid_grant", "code expired", Some("n-7"))).await;
    assert_eq!((out, sent.len()), (Ok((StatusCode::BAD_REQUEST, true)), 1), "only use_dpop_nonce is retried");
    let (_, sent) = run(&d, |_, _| ok()).await;
    assert_eq!(sent[0].as_ref().unwrap()["nonce"], "n-7");
}
