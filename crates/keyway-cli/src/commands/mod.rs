//! One module per command; each is a plain function of its arguments, the resolved
//! settings and the printer.

mod add;
mod auth;
mod authorize;
mod call;
mod demo;
mod edit;
mod probe;
mod proxy;
mod serve;
mod servers;
mod store;
mod testbed;
mod testbed_signals;
mod token;
mod tools;
mod transfer;
mod ui;

use crate::{cli::Command, exit::CliError, printer::Printer, settings::Settings};

pub async fn run(command: Command, settings: &Settings, printer: &Printer) -> Result<(), CliError> {
    match command {
        Command::Demo(args) => demo::run(args, settings, printer).await,
        Command::Probe(args) => probe::run(*args, printer).await,
        Command::Add(args) => add::run(*args, settings, printer).await,
        Command::List => servers::list(settings, printer).await,
        Command::Show(args) => servers::show(args, settings, printer).await,
        Command::Edit(args) => edit::run(*args, settings, printer).await,
        Command::Authorize(args) => authorize::run(*args, settings, printer).await,
        Command::Logout(args) => authorize::logout(args, settings, printer).await,
        Command::SetToken(args) => token::set_token(args, settings, printer).await,
        Command::Remove(args) => servers::remove(args, settings, printer).await,
        Command::Enable(args) => servers::set_enabled(args, true, settings, printer).await,
        Command::Disable(args) => servers::set_enabled(args, false, settings, printer).await,
        Command::Check(args) => tools::check(args, settings, printer).await,
        Command::Doctor(args) => servers::doctor(args, settings, printer).await,
        Command::Import(args) => transfer::import(args, settings, printer).await,
        Command::Export(args) => transfer::export(args, settings, printer).await,
        Command::Call(args) => call::run(*args, settings, printer).await,
        Command::Proxy(args) => proxy::run(*args, settings, printer).await,
        Command::Tools(args) => tools::run(args, tools::What::Tools, settings, printer).await,
        Command::Prompts(args) => {
            tools::run(args.into(), tools::What::Prompts, settings, printer).await
        }
        Command::Resources(args) => {
            tools::run(args.into(), tools::What::Resources, settings, printer).await
        }
        Command::Serve(args) => serve::run(*args, settings, printer).await,
        Command::Ui(args) => ui::run(*args, settings, printer).await,
        Command::Testbed(args) => testbed::run(*args, printer).await,
        Command::Completions(args) => {
            let mut cmd = <crate::cli::Cli as clap::CommandFactory>::command();
            let mut script = Vec::new();
            clap_complete::generate(args.shell, &mut cmd, "keyway", &mut script);
            crate::printer::emit(|out| std::io::Write::write_all(out, &script))?;
            Ok(())
        }
    }
}
