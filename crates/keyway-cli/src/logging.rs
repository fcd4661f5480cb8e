//! Logs go to stderr only (stdout carries results, and MCP frames for the bridge).
//! `KEYWAY_LOG` (tracing's filter syntax) overrides -v/-q.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

pub fn init(
    verbose: u8,
    quiet: bool,
    file: Option<&std::path::Path>,
) -> Result<(), crate::exit::CliError> {
    let default = match (quiet, verbose) {
        // rmcp logs transport failures that keyway already reports as errors with a
        // hint; its own lines appear from -v on.
        (true, _) => "error,rmcp=off",
        (false, 0) => "warn,rmcp=off",
        (false, 1) => "warn,rmcp=error,keyway=info,keyway_cli=info",
        (false, 2) => "info,keyway=debug,keyway_cli=debug",
        (false, _) => "debug,keyway=trace,keyway_cli=trace",
    };
    let filter = EnvFilter::try_from_env("KEYWAY_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(verbose >= 2);
    match file {
        Some(path) => {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| anyhow::anyhow!("cannot open the log file {}: {e}", path.display()))?;
            let _ = builder
                .with_writer(std::sync::Mutex::new(f))
                .with_ansi(false)
                .try_init();
        }
        None => {
            let _ = builder
                .with_writer(std::io::stderr)
                .with_ansi(std::io::stderr().is_terminal())
                .try_init();
        }
    }
    Ok(())
}
