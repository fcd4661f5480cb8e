//! The `keyway` command. `main` only maps the result of [`run`] to an exit code.

mod cli;
mod commands;
mod exit;
mod logging;
mod printer;
mod progress;
mod settings;

use std::process::ExitCode;

use clap::Parser;

use crate::{
    cli::Cli,
    exit::{CliError, ExitStatus},
    printer::Printer,
    settings::Settings,
};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitStatus::Success.into(),
        Err(e) => e.report(json_wanted()).into(),
    }
}

/// Whether the command line asks for `--json` (read from the arguments themselves, so
/// that a command line clap refused still gets its error as JSON).
fn json_wanted() -> bool {
    std::env::args_os()
        .skip(1)
        .take_while(|a| a != "--")
        .any(|a| a == "--json")
}

fn run() -> Result<(), CliError> {
    // Before any secret is read: no core file, no peeking from other processes.
    let not_hardened = keyway::process::harden();
    let cli = Cli::try_parse().map_err(CliError::Usage)?;
    logging::init(
        cli.global.verbose,
        cli.global.quiet,
        cli.global.log_file.as_deref(),
        cli.global.log_format,
    )?;
    progress::init(
        cli.global.quiet || cli.global.json,
        cli.global.verbose,
        cli.global.log_file.is_some(),
    );
    for why in not_hardened {
        tracing::warn!("{why}");
    }
    let settings = Settings::resolve(&cli.global);
    let printer = Printer::new(&cli.global);
    // A bridge moves one client's messages: one thread does that with no cross-thread
    // wake-ups (a third of the CPU per message, and less memory). The rest may use
    // every core.
    let mut builder = match cli.command {
        cli::Command::Proxy(_) | cli::Command::Serve(_) => {
            tokio::runtime::Builder::new_current_thread()
        }
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    let runtime = builder.enable_all().build().map_err(|e| {
        CliError::failure(anyhow::Error::new(e).context("cannot start the async runtime"))
    })?;
    runtime.block_on(commands::run(cli.command, &settings, &printer))
}
