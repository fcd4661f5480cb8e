//! All output of commands goes through the printer: human text, or JSON with
//! `--json`; `-q` keeps only results.

use std::io::Write;

use serde::Serialize;

use crate::cli::GlobalArgs;

#[derive(Debug, Clone, Copy)]
pub struct Printer {
    json: bool,
    quiet: bool,
}

impl Printer {
    pub fn new(global: &GlobalArgs) -> Self {
        Self {
            json: global.json,
            quiet: global.quiet,
        }
    }

    pub fn json_mode(&self) -> bool {
        self.json
    }

    pub fn quiet(&self) -> bool {
        self.quiet
    }

    /// Progress and narration: human mode only, not with -q.
    pub fn step(&self, line: impl AsRef<str>) {
        if !self.json && !self.quiet {
            let _ = emit(|out| writeln!(out, "{}", line.as_ref()));
        }
    }

    /// A result line in human mode (also printed with -q).
    pub fn result(&self, line: impl AsRef<str>) {
        if !self.json {
            let _ = emit(|out| writeln!(out, "{}", line.as_ref()));
        }
    }

    /// The result as one JSON document (with --json).
    pub fn json<T: Serialize>(&self, value: &T) -> anyhow::Result<()> {
        if self.json {
            JSON_WRITTEN.store(true, std::sync::atomic::Ordering::Relaxed);
            emit(|out| {
                serde_json::to_writer(&mut *out, value)?;
                writeln!(out)
            })?;
        }
        Ok(())
    }
}

/// Whether a JSON result was written: an error after it (a probe that found the
/// server unreachable) is not written as a second document.
static JSON_WRITTEN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether [`Printer::json`] wrote a document.
pub fn json_written() -> bool {
    JSON_WRITTEN.load(std::sync::atomic::Ordering::Relaxed)
}

/// Write to stdout and flush. When whoever reads it has gone (`keyway list | head -1`),
/// the command ends here, quietly and successfully, as Unix tools do when their reader
/// leaves: what it was printing is no longer wanted. Nothing is lost by ending here:
/// the store commits whole transactions, and locks and leases are released by the
/// operating system with the process.
pub fn emit(
    write: impl FnOnce(&mut std::io::StdoutLock<'static>) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let written = crate::progress::suspend(|| {
        let mut out = std::io::stdout().lock();
        write(&mut out).and_then(|()| out.flush())
    });
    match written {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        other => other,
    }
}
