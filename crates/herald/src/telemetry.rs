//! Logging: `tracing` with the level from `HERALD_LOG` (default `info`) and a pretty or JSON
//! format from the configuration. Logs go to stderr; stdout carries only command output.

use crate::config::{LogConfig, LogFormat};
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. Call once.
pub(crate) fn init(config: &LogConfig) {
    let filter = EnvFilter::try_from_env("HERALD_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match config.format {
        LogFormat::Pretty => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    if let Err(e) = result {
        eprintln!("warning: logging was already initialised: {e}");
    }
}
