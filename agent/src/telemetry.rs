//! Logging: JSON lines by default (`EDGEWIRE_LOG_FORMAT=text` for people), filtered by `RUST_LOG`.

use edgewire_api::env::LOG_FORMAT;
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. Logs go to stderr so `tail` output on stdout stays clean.
pub fn init() -> Result<(), String> {
    // lapin logs every returned (unroutable) message at WARN with its payload; the bridge reports those
    // itself, naming exchange and routing key, so lapin's copy is kept to errors.
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,lapin::returned_messages=error"));
    let format = std::env::var(LOG_FORMAT).unwrap_or_default();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format.trim() {
        "" | "json" => builder.json().try_init().map_err(|e| e.to_string()),
        "text" => builder.try_init().map_err(|e| e.to_string()),
        other => Err(format!("{LOG_FORMAT}: must be json or text, got {other:?}")),
    }
}
