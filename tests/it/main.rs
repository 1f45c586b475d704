//! One integration-test binary; a module per concern.
#![allow(clippy::unwrap_used)]

mod harness;

mod attacks;
mod cli;
mod deploy;
mod forward;
mod identity;
mod interop;
mod jwe;
mod login;
mod nginx;
mod redis;
mod sessions;
mod server;
