//! The idgate binary: parse the command line, load configuration before binding anything, run. Exit status: 0 ok,
//! 2 configuration error (every problem printed, one per line), 1 start-up or runtime failure.
// As in lib.rs: a release build inlines the library's request handler (a thin wrapper since it opens the request's
// span) into this crate, which then computes the layout of the whole request future, deeper than rustc's default
// query depth of 128.
#![recursion_limit = "256"]

use std::{process::ExitCode, sync::Arc};

use base64::{Engine, engine::general_purpose::STANDARD};
use clap::Parser;
use idgate::{
    app,
    cli::{Cli, Command},
    clock::SystemClock,
    config, demo, telemetry,
};

/// mimalloc: the proxy allocates and frees many small buffers per request; glibc's allocator spent a tenth of the
/// request path in malloc/free and consolidation (bench/: see the commit that added this).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const EXIT_CONFIG: u8 = 2;
const EXIT_RUNTIME: u8 = 1;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::GenSecret = cli.command {
        println!("{}", STANDARD.encode(idgate::random::bytes::<32>()));
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("idgate: cannot start the runtime: {e}");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    runtime.block_on(async move {
        match cli.command {
            Command::Run { config } => run(config).await,
            Command::Check { config } => check(config).await,
            Command::Demo { port, encrypt_id_tokens, private_key_jwt, par, dpop } => {
                telemetry::init(&config::settings::LogSettings {
                    format: config::LogFormat::Text,
                    level: "info".into(),
                });
                let modes = demo::Modes { private_key_jwt, par, dpop };
                let result = demo::run(port, encrypt_id_tokens, modes).await;
                telemetry::access_log::flush();
                match result {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        eprintln!("idgate demo: {e}");
                        ExitCode::from(EXIT_RUNTIME)
                    }
                }
            }
            Command::GenSecret => ExitCode::SUCCESS,
        }
    })
}

fn load(path: Option<std::path::PathBuf>) -> Result<config::Settings, ExitCode> {
    config::load_from_process(path.as_deref()).map_err(|e| {
        eprintln!("idgate: invalid configuration:");
        for p in &e.problems {
            eprintln!("  {}: {}", p.key, p.why);
        }
        ExitCode::from(EXIT_CONFIG)
    })
}

async fn run(path: Option<std::path::PathBuf>) -> ExitCode {
    let settings = match load(path.clone()) {
        Ok(s) => s,
        Err(code) => return code,
    };
    telemetry::init(&settings.log);
    let running = match app::start(settings, Arc::new(SystemClock)).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "cannot start");
            eprintln!("idgate: {e}");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    let stop = running.stopper();
    tokio::spawn(async move {
        app::termination_signal().await;
        let _ = stop.send(true);
    });
    spawn_reload_on_hangup(running.reloader(), path);
    running.wait().await;
    // Every request has been answered: its line is written before the process ends.
    telemetry::access_log::flush();
    tracing::info!("stopped");
    ExitCode::SUCCESS
}

/// SIGHUP reloads the configuration file: secrets, routes and header mappings change without dropping a connection.
/// A configuration with errors is refused, each problem logged, and the running one keeps serving.
fn spawn_reload_on_hangup(reloader: app::Reloader, path: Option<std::path::PathBuf>) {
    #[cfg(unix)]
    tokio::spawn(async move {
        let Ok(mut hangup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else { return };
        while hangup.recv().await.is_some() {
            match config::load_from_process(path.as_deref()) {
                Ok(settings) => {
                    reloader.reload(settings);
                }
                Err(e) => {
                    for p in &e.problems {
                        tracing::error!(key = %p.key, problem = %p.why, "reload refused; the running configuration stays");
                    }
                }
            }
        }
    });
}

async fn check(path: Option<std::path::PathBuf>) -> ExitCode {
    let settings = match load(path) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let report = idgate::check::run(&settings).await;
    for line in &report.lines {
        println!("{line}");
    }
    if report.ok { ExitCode::SUCCESS } else { ExitCode::from(EXIT_RUNTIME) }
}
