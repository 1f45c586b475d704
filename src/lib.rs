//! idgate — an authenticating reverse proxy. A request flows one way through these modules:
//!
//! ```text
//! server ─► route::classify ─┬─ our endpoints (start, callback, sign_out) ─► login ─► 302 + Set-Cookie
//!                            │     callback: oidc (token endpoint) ─► id_token::validate ─► session::seal
//!                            ├─ public route ─► identity::strip ─► forward
//!                            └─ protected route, auth, userinfo ─► pipeline:
//!                                  session::open ─► policy::authorize ─► identity::strip + apply ─► forward | answer
//!              any error ─► error::respond ─► one response, one log line
//! ```
// The gRPC ext_authz check (src/ext_authz/grpc.rs) awaits the whole request pipeline inside one async-trait future:
// its layout nests deeper than rustc's default query depth of 128 (main fails a clean build without this).
#![recursion_limit = "256"]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

// The data path, in the order a request meets it.
pub mod server;
pub mod framing;
pub mod route;
pub mod login;
pub mod oidc;
pub mod providers;
pub mod id_token;
pub mod session;
pub mod policy;
pub mod identity;
pub mod forward;
pub mod assertion;
pub mod bearer;
pub mod pipeline;
pub mod ext_authz;
pub mod error;

// Beside the path: start-up, configuration, wiring and support.
pub mod cli;
pub mod config;
pub mod app;
pub mod check;
pub mod body;
pub mod client;
pub mod clock;
pub mod random;
pub mod signing;
pub mod own_keys;
pub mod telemetry;
pub mod dev_issuer;
pub mod demo;
