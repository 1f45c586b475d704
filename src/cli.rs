//! The command line: `run`, `check`, `demo`, `gen-secret`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// idgate — an authenticating reverse proxy: OpenID Connect login in front of any web application.
#[derive(Debug, Parser)]
#[command(name = "idgate", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// What to do.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve: the public listener (login + proxy) and the admin listener (/healthz /readyz /metrics).
    Run {
        /// Configuration file (.toml, .yaml). Defaults to $IDGATE_CONFIG.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Validate the configuration, fetch the issuer's discovery document and keys, and print what would be
    /// served. Exits 0 when everything is usable, 2 on configuration errors, 1 when the issuer is not usable.
    Check {
        /// Configuration file (.toml, .yaml). Defaults to $IDGATE_CONFIG.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Run a self-contained demo on loopback: a development issuer (logs in anyone — local use only), an upstream
    /// that shows the headers it receives, and idgate in front of it.
    Demo {
        /// Port for the proxy on 127.0.0.1.
        #[arg(long, default_value_t = 4180)]
        port: u16,
        /// Have the development issuer encrypt ID tokens to idgate (R8), and require it.
        #[arg(long, value_enum)]
        encrypt_id_tokens: Option<crate::demo::DemoEncryption>,
        /// Authenticate to the development issuer with `private_key_jwt` (a generated key, published at /oauth2/jwks).
        #[arg(long)]
        private_key_jwt: bool,
        /// Send the authorization parameters by a pushed authorization request (RFC 9126).
        #[arg(long)]
        par: bool,
    },
    /// Print a fresh session secret (base64 of 32 random bytes) for `session.secret`.
    GenSecret,
}
