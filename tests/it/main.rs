//! One integration-test binary; a module per concern.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

mod assertion;
mod attacks;
mod bearer;
mod cli;
mod client_auth;
mod deploy;
mod differential;
mod dpop;
mod ext_authz;
mod forward;
mod gateways;
mod identity;
mod interop;
mod jwe;
mod login;
mod nginx;
mod otlp;
mod own_http1;
mod preserved_post;
mod providers;
mod redis;
mod redis_ha;
mod sessions;
mod smuggling;
mod server;
mod store_conformance;
mod trace;
