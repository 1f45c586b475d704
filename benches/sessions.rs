//! Server-side sessions, measured against baselines from the same run:
//! - memory held per session by the memory store, beyond the ID token itself (target ≤ 1 KiB);
//! - time to open a session from the memory and Redis stores, as a ratio to the cookie store.
//!
//! `cargo bench --bench sessions` (starts its own redis-server on a free loopback port when one is installed).
//! Under `cargo test` it runs a small smoke pass only.
#![allow(clippy::expect_used, reason = "benchmark set-up: a failure is a broken benchmark")]

use std::{sync::Arc, time::Instant};

use http::{HeaderMap, HeaderValue, header::COOKIE};
use idgate::{
    config::{Secret, StoreKind, settings::SessionSettings},
    dev_issuer::{DevAlg, SigningKey},
    id_token::Claims,
    session::{NewSession, Sessions},
};
use serde_json::json;

const NOW: i64 = 1_800_000_000;

fn token(key: &SigningKey, i: usize) -> (String, Claims) {
    let c = json!({
        "iss": "https://issuer.example.com", "aud": "client", "sub": format!("auth0|user-{i:08}"), "iat": NOW,
        "exp": NOW + 36000, "sid": format!("sid-{i:08}"), "name": "Alice Example", "email": "alice@example.com",
        "email_verified": true, "picture": "https://example.com/avatars/alice.png", "nonce": "n-0S6_WzA2Mj",
        "https://example.com/roles": ["user", "editor", "billing"], "pad": "x".repeat(700),
    });
    let t = key.sign(&c);
    let keys = idgate::id_token::KeySet::from_jwks(json!({"keys": [key.jwk()]}).to_string().as_bytes()).expect("jwks");
    let want = idgate::id_token::Expectations {
        issuer: "https://issuer.example.com".into(),
        audiences: vec!["client".into()],
        allowed_algs: vec![jsonwebtoken::Algorithm::ES256],
        leeway: 60,
    };
    let claims = idgate::id_token::validate(&t, &keys, &want, None, NOW).expect("valid");
    (t, claims)
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn settings(store: StoreKind) -> SessionSettings {
    SessionSettings { store, ..SessionSettings::with_secret(Secret::new("bench-secret-bench-secret-bench-secret")) }
}

fn cookie_header(set: &[HeaderValue]) -> HeaderMap {
    let pairs: Vec<&str> = set.iter().filter_map(|v| v.to_str().ok()?.split(';').next()).collect();
    let mut h = HeaderMap::new();
    h.insert(COOKIE, HeaderValue::from_str(&pairs.join("; ")).expect("cookie"));
    h
}

async fn memory_per_session(n: usize, key: &SigningKey) {
    let sessions = Sessions::new(&settings(StoreKind::Memory)).expect("memory store");
    let tokens: Vec<(String, Claims)> = (0..n).map(|i| token(key, i)).collect();
    let token_bytes: usize = tokens.iter().map(|(t, _)| t.len()).sum::<usize>() / n;
    let before = rss_kib();
    let mut cookies = Vec::with_capacity(n);
    for (t, c) in &tokens {
        let new = NewSession {
            id_token: t,
            claims: c,
            refresh_token: None,
            access_token: None,
            nonce: None,
            userinfo: None,
            provider: None,
        };
        cookies.push(sessions.save(&HeaderMap::new(), &new, NOW).await.expect("saved"));
    }
    let after = rss_kib();
    let per = (after.saturating_sub(before) as f64 * 1024.0) / n as f64;
    let overhead = per - token_bytes as f64;
    println!(
        "| memory store, {n} sessions | {per:.0} B/session | token {token_bytes} B | overhead {overhead:.0} B ({:.2}× target 1 KiB) |",
        overhead / 1024.0
    );
}

async fn open_latency(label: &str, sessions: &Sessions, headers: &HeaderMap, n: usize) -> f64 {
    for _ in 0..n / 10 {
        sessions.open(headers, NOW).await.expect("opens");
    }
    let t = Instant::now();
    for _ in 0..n {
        std::hint::black_box(sessions.open(std::hint::black_box(headers), NOW).await.expect("opens"));
    }
    let us = t.elapsed().as_secs_f64() * 1e6 / n as f64;
    println!("| open, {label} | {us:.2} µs |");
    us
}

fn start_redis() -> Option<(std::process::Child, u16)> {
    let bin = ["/usr/bin/redis-server", "/usr/local/bin/redis-server"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())?;
    let port = std::net::TcpListener::bind("127.0.0.1:0").ok()?.local_addr().ok()?.port();
    let child = std::process::Command::new(bin)
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .ok()?;
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Some((child, port));
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    None
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (n_mem, n_open) = if full { (20_000, 20_000) } else { (200, 200) };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let key = Arc::new(SigningKey::generate(DevAlg::ES256));
    rt.block_on(async {
        println!("| measurement | result |\n|---|---|");
        memory_per_session(n_mem, &key).await;
        let (t, c) = token(&key, 1);
        let new = NewSession {
            id_token: &t,
            claims: &c,
            refresh_token: None,
            access_token: None,
            nonce: None,
            userinfo: None,
            provider: None,
        };
        let cookie = Sessions::new(&settings(StoreKind::Cookie)).expect("cookie");
        let h = cookie_header(&cookie.save(&HeaderMap::new(), &new, NOW).await.expect("saved"));
        let base = open_latency("cookie store (baseline)", &cookie, &h, n_open).await;
        let memory = Sessions::new(&settings(StoreKind::Memory)).expect("memory");
        let h = cookie_header(&memory.save(&HeaderMap::new(), &new, NOW).await.expect("saved"));
        let m = open_latency("memory store", &memory, &h, n_open).await;
        println!("| memory / cookie | {:.2}× |", m / base);
        match start_redis() {
            Some((mut child, port)) => {
                let redis = Sessions::new(&settings(StoreKind::Redis {
                    url: Secret::new(format!("redis://127.0.0.1:{port}/")),
                }))
                .expect("redis");
                let h = cookie_header(&redis.save(&HeaderMap::new(), &new, NOW).await.expect("saved"));
                let r = open_latency("redis store (loopback)", &redis, &h, n_open / 4).await;
                println!("| redis / cookie | {:.2}× (added {:.1} µs per request) |", r / base, r - base);
                let _ = child.kill();
            }
            None => println!("| redis store | not measured: redis-server is not installed |"),
        }
    });
}
