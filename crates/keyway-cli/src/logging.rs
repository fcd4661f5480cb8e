//! Logs go to stderr only (stdout carries results, and MCP frames for the bridge).
//! `KEYWAY_LOG` (tracing's filter syntax) overrides -v/-q.

use std::io::IsTerminal;

use tracing_subscriber::{EnvFilter, fmt::writer::BoxMakeWriter};

pub fn init(
    verbose: u8,
    quiet: bool,
    file: Option<&std::path::Path>,
    format: crate::cli::LogFormat,
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
    let (writer, ansi) = match file {
        Some(path) => {
            // Logs name servers, URLs and errors: readable by their owner only.
            let mut options = std::fs::OpenOptions::new();
            options.create(true).append(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let f = options
                .open(path)
                .map_err(|e| anyhow::anyhow!("cannot open the log file {}: {e}", path.display()))?;
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                // A file that was there already keeps its mode when opened: tighten it
                // (a regular file: not /dev/null or a terminal).
                if f.metadata()
                    .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o077 != 0)
                {
                    f.set_permissions(std::fs::Permissions::from_mode(0o600))
                        .map_err(|e| {
                            anyhow::anyhow!(
                                "cannot make the log file {} private: {e}",
                                path.display()
                            )
                        })?;
                }
            }
            (BoxMakeWriter::new(std::sync::Mutex::new(f)), false)
        }
        None => (
            BoxMakeWriter::new(|| SpinnerSafeStderr),
            std::io::stderr().is_terminal(),
        ),
    };
    let builder = builder.with_writer(writer);
    let _ = match format {
        crate::cli::LogFormat::Text => builder.with_ansi(ansi).try_init(),
        // The event's fields at the top level, with those of the request (its span)
        // under "span": one object per line, no colours.
        crate::cli::LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
    Ok(())
}

/// stderr, with a showing spinner lifted for each write (a warning mid-wait).
struct SpinnerSafeStderr;

impl std::io::Write for SpinnerSafeStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        crate::progress::suspend(|| std::io::stderr().write(buf))
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}
