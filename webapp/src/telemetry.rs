//! Logging set-up: `tracing` events written as JSON lines (default) or text.
//!
//! Split into [`get_subscriber`] and [`init_subscriber`] so tests can build a subscriber that
//! writes to `std::io::sink` (or to stdout when `TEST_LOG` is set).

use anyhow::Context;
use tracing::Subscriber;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Builds a subscriber; `RUST_LOG` overrides `default_filter`.
pub fn get_subscriber<Sink>(
    default_filter: &str,
    format: LogFormat,
    sink: Sink,
) -> Box<dyn Subscriber + Send + Sync>
where
    Sink: for<'writer> MakeWriter<'writer> + Send + Sync + 'static,
{
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(sink)
        .with_target(false);
    match format {
        // Flat objects (fields next to "message", no span lists) keep lines short and easy to query.
        LogFormat::Json => Box::new(
            builder
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_span_list(false)
                .finish(),
        ),
        LogFormat::Text => Box::new(builder.with_ansi(false).finish()),
    }
}

/// Installs `subscriber` as the process-wide default; call once.
pub fn init_subscriber(subscriber: Box<dyn Subscriber + Send + Sync>) -> anyhow::Result<()> {
    tracing::subscriber::set_global_default(subscriber).context("install the log subscriber")
}
