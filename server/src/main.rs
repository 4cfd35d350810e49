//! `courier`: the reference server.

use std::process::ExitCode;

use clap::Parser;
use courier_server::cli::{Cli, Command};
use courier_server::startup::{Application, open_store};

/// jemalloc instead of the system allocator: the fan-out path allocates and frees small
/// envelopes and buffers on several threads at a high rate, where glibc's per-thread
/// arenas spent a tenth of the server's CPU time and grew their heaps a page at a time.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[actix_web::main]
async fn main() -> ExitCode {
    match run(Cli::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // The cause chain on one line; not anyhow's `Debug`, which adds a backtrace
            // whenever RUST_BACKTRACE is set, for what is a configuration mistake.
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let command = cli.command.unwrap_or(Command::Serve);
    if matches!(command, Command::Openapi) {
        print!("{}", courier_server::openapi::json());
        return Ok(());
    }
    let config = cli.settings.into_config()?;
    courier_server::telemetry::init(config.log_format);
    match command {
        Command::Serve => {
            let app = Application::build(config).await?;
            tracing::info!(port = app.port(), "courier listening");
            let handle = app.handle();
            actix_web::rt::spawn(async move {
                shutdown_signal().await;
                tracing::info!("shutting down");
                handle.stop().await;
            });
            app.run().await?;
        }
        Command::Migrate => {
            open_store(&config).await?;
            tracing::info!("migrations applied");
        }
        Command::Openapi => {}
    }
    Ok(())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
