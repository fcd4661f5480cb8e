//! One module per command; each is a plain function of its arguments, the resolved
//! settings and the printer.

mod auth;
mod call;
mod demo;
mod testbed;

use crate::{cli::Command, exit::CliError, printer::Printer, settings::Settings};

pub async fn run(command: Command, settings: &Settings, printer: &Printer) -> Result<(), CliError> {
    let _ = settings;
    match command {
        Command::Demo(args) => demo::run(args, printer).await,
        Command::Call(args) => call::run(*args, printer).await,
        Command::Testbed(args) => testbed::run(*args, printer).await,
    }
}
