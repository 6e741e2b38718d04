//! `webapp`: serve HTTP (default), or `webapp healthcheck` to probe a running instance.

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::Context;
use proxy::probe;
use tokio::net::TcpListener;
use webapp::config::{self, Command, Settings};
use webapp::{store, telemetry, AppState};

fn main() -> ExitCode {
    let settings = config::parse_or_exit();
    match settings.command {
        Some(Command::Healthcheck) => {
            let url = format!("http://127.0.0.1:{}/readyz", settings.port);
            ExitCode::from(probe::check(&url))
        }
        Some(Command::Serve) | None => match serve(settings) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                // One line, so it reads well in `docker logs` next to the JSON lines.
                eprintln!("webapp: {error:#}");
                ExitCode::FAILURE
            }
        },
    }
}

/// Log filter unless `RUST_LOG` says otherwise: this crate's info lines, everyone's warnings.
const DEFAULT_LOG_FILTER: &str = concat!(env!("CARGO_CRATE_NAME"), "=info,warn");

fn serve(settings: Settings) -> anyhow::Result<()> {
    // Lines leave through a batching writer thread, so no request waits for stdout; the guard
    // writes out what is still queued or batched when it drops, after the runtime has stopped.
    let (writer, log_guard) = telemetry::batched(
        std::io::stdout(),
        telemetry::BatchSettings::new(
            settings.log_flush_interval(),
            DEFAULT_LOG_FILTER,
            settings.log_format,
        ),
    )?;
    telemetry::publish_dropped_lines(log_guard.dropped_lines());
    let subscriber = telemetry::get_subscriber(DEFAULT_LOG_FILTER, settings.log_format, writer);
    telemetry::init_subscriber(subscriber)?;
    let served = serve_until_shutdown(&settings);
    drop(log_guard);
    served
}

fn serve_until_shutdown(settings: &Settings) -> anyhow::Result<()> {
    // Multi-threaded: one worker per core, so a 2-core container uses both.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start the tokio runtime")?;
    runtime.block_on(async {
        let state = AppState::from_settings(settings)?;
        let address = SocketAddr::new(settings.bind, settings.port);
        let listener = TcpListener::bind(address).await.with_context(|| {
            format!("listen on {address} (set WEBAPP_BIND / WEBAPP_PORT to change it)")
        })?;
        tracing::info!(
            address = %listener.local_addr().context("read the bound address")?,
            replica = &*state.replica,
            redis = store::describe_address(&settings.redis.redis_url),
            redis_auth = settings.redis.redis_password_file.is_some(),
            key_prefix = settings.redis.redis_key_prefix,
            "listening"
        );
        webapp::run(
            listener,
            state,
            webapp::shutdown_signal(),
            settings.shutdown_grace(),
        )
        .await
    })
}
