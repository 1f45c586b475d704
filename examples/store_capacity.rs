//! Writes real sealed sessions through idgate's own code path — `Sessions::save` with an RS256 ID token validated by
//! `id_token::validate`, into the Redis store — for bench/run.py's capacity figure (sessions per GiB of Redis
//! memory), which reads `INFO memory` on every data node before and after. Each session is another user's (its own
//! `sub` and `sid`, so its own two logout indexes), as in production.
//!
//! `cargo run --release --example store_capacity -- REDIS_URL COUNT PROFILE`, PROFILE one of:
//! - `typical`: an enterprise issuer's ID token (profile, email, 5 groups, 3 roles, `amr`, `acr`; about 1.5 KB) and
//!   an opaque refresh token (`offline_access`);
//! - `large`: 40 groups, a JWT refresh token and the access token kept for `oidc.forward_access_token`.
//!
//! Prints one JSON line: the count and the token sizes of one session.
#![allow(clippy::expect_used, reason = "measurement set-up: a failure is a broken measurement")]

use std::sync::Arc;

use http::HeaderMap;
use idgate::{
    config::{Secret, StoreKind, settings::SessionSettings},
    dev_issuer::{DevAlg, SigningKey},
    id_token::{Claims, Expectations, KeySet},
    session::{NewSession, Sessions},
};
use serde_json::json;

const ISSUER: &str = "https://login.example.com/realms/corp";
const TASKS: usize = 8;

struct Tokens {
    id_token: String,
    claims: Claims,
    refresh_token: String,
    access_token: Option<String>,
}

/// A 36-character id, distinct per `i` and `what` (the shape of the UUIDs issuers use for `sub` and `sid`).
fn uuid(what: u32, i: usize) -> String {
    format!("{what:08x}-{:04x}-4{:03x}-a{:03x}-{i:012x}", i % 0xffff, i % 0xfff, (i * 7) % 0xfff)
}

fn tokens(key: &SigningKey, keys: &KeySet, profile: &str, i: usize, now: i64) -> Tokens {
    let large = profile == "large";
    let groups: Vec<String> =
        (0..if large { 40 } else { 5 }).map(|g| format!("/corp/engineering/team-{g:02}-platform")).collect();
    let claims = json!({
        "iss": ISSUER, "aud": "idgate", "azp": "idgate", "sub": uuid(1, i), "sid": uuid(2, i), "typ": "ID",
        "iat": now, "auth_time": now, "exp": now + 3600, "nonce": "n-0S6_WzA2Mj-Hq3fT8vKxP1bLmYcR9sUoE4dZgNw",
        "at_hash": "77QmUPtjPfzWtF2AnpK9RQ", "acr": "1", "amr": ["pwd", "otp"],
        "name": "Alice Example", "given_name": "Alice", "family_name": "Example",
        "preferred_username": format!("alice.example{i}"), "email": format!("alice.example{i}@corp.example.com"),
        "email_verified": true, "groups": groups, "roles": ["user", "editor", "billing-viewer"],
    });
    let id_token = key.sign(&claims);
    let want = Expectations {
        issuer: ISSUER.into(),
        audiences: vec!["idgate".into()],
        allowed_algs: vec![jsonwebtoken::Algorithm::RS256],
        leeway: 60,
    };
    let claims = idgate::id_token::validate(&id_token, keys, &want, None, now).expect("a valid ID token");
    let (refresh_token, access_token) = if large {
        let refresh = key.sign(&json!({"iss": ISSUER, "aud": ISSUER, "sub": uuid(1, i), "sid": uuid(2, i),
            "typ": "Refresh", "iat": now, "exp": now + 36000, "jti": uuid(3, i), "scope": "openid profile email offline_access"}));
        let access = key.sign(&json!({"iss": ISSUER, "aud": ["app", "account"], "sub": uuid(1, i), "sid": uuid(2, i),
            "typ": "Bearer", "azp": "idgate", "iat": now, "exp": now + 300, "jti": uuid(4, i),
            "scope": "openid profile email offline_access", "realm_access": {"roles": ["user", "editor", "billing-viewer"]},
            "preferred_username": format!("alice.example{i}"), "email": format!("alice.example{i}@corp.example.com")}));
        (refresh, Some(access))
    } else {
        // 64 random bytes, base64url: the shape of an opaque refresh token.
        (format!("{:086}", i), None)
    };
    Tokens { id_token, claims, refresh_token, access_token }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, url, count, profile] = &args[..] else {
        eprintln!("usage: store_capacity REDIS_URL COUNT typical|large");
        std::process::exit(2);
    };
    let count: usize = count.parse().expect("COUNT is a number");
    assert!(profile == "typical" || profile == "large", "PROFILE is typical or large");
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let key = SigningKey::generate(DevAlg::RS256);
    let keys = KeySet::from_jwks(json!({"keys": [key.jwk()]}).to_string().as_bytes()).expect("jwks");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs() as i64;
    let settings = SessionSettings {
        store: StoreKind::Redis { url: Secret::new(url.clone()) },
        ..SessionSettings::with_secret(Secret::new("capacity-secret-capacity-secret-capacity"))
    };
    let sessions = Arc::new(Sessions::new(&settings).expect("the Redis store"));
    let all: Arc<Vec<Tokens>> = Arc::new((0..count).map(|i| tokens(&key, &keys, profile, i, now)).collect());
    rt.block_on(async {
        let mut tasks = Vec::new();
        for t in 0..TASKS {
            let (sessions, all) = (Arc::clone(&sessions), Arc::clone(&all));
            tasks.push(tokio::spawn(async move {
                for tok in all.iter().skip(t).step_by(TASKS) {
                    let new = NewSession {
                        id_token: &tok.id_token,
                        claims: &tok.claims,
                        refresh_token: Some(&tok.refresh_token),
                        access_token: tok.access_token.as_deref(),
                        nonce: tok.claims.get("nonce").and_then(|n| n.as_str()),
                        userinfo: None,
                        provider: None,
                    };
                    sessions.save(&HeaderMap::new(), &new, now).await.expect("saved");
                }
            }));
        }
        for t in tasks {
            t.await.expect("writer");
        }
    });
    let one = &all[0];
    println!(
        "{}",
        json!({"sessions": count, "profile": profile, "id_token_bytes": one.id_token.len(),
            "refresh_token_bytes": one.refresh_token.len(),
            "access_token_bytes": one.access_token.as_ref().map_or(0, String::len)})
    );
}
