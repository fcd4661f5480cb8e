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
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{}", line.as_ref());
            let _ = out.flush();
        }
    }

    /// A result line in human mode (also printed with -q).
    pub fn result(&self, line: impl AsRef<str>) {
        if !self.json {
            println!("{}", line.as_ref());
        }
    }

    /// The result as one JSON document (with --json).
    pub fn json<T: Serialize>(&self, value: &T) -> anyhow::Result<()> {
        if self.json {
            let mut out = std::io::stdout().lock();
            serde_json::to_writer(&mut out, value)?;
            writeln!(out)?;
            out.flush()?;
        }
        Ok(())
    }
}
