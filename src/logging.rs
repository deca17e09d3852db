//! Logging setup: plain text or JSON lines on stderr, filtered by level.

use std::io::IsTerminal as _;

use anyhow::Context as _;
use tracing_subscriber::EnvFilter;

use crate::cli::LogFormat;

/// Installs the global subscriber. boringtun's own messages are shown only at debug.
pub fn init(format: LogFormat, level: &str) -> anyhow::Result<()> {
    let verbose = matches!(level, "debug" | "trace");
    let directives = if level.contains('=') || verbose {
        level.to_string()
    } else {
        format!("{level},boringtun=off")
    };
    let filter =
        EnvFilter::try_new(&directives).with_context(|| format!("invalid log level {level:?}"))?;
    // Colours only for a terminal: kubectl logs and files get plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    result.map_err(|e| anyhow::anyhow!("cannot install the logger: {e}"))
}
