//! Every command and flag of `keyway`, in one place.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "keyway",
    version,
    about = "Reach remote MCP servers that need authorization.",
    long_about = "keyway probes remote MCP servers, runs their OAuth 2.1 authorization, keeps \
                  the credentials encrypted, and bridges local MCP clients to them.",
    after_help = "Exit codes: 0 ok, 1 failure, 2 usage error, 3 authorization needed.\n\
                  Start with `keyway demo` to see the whole flow against a local test server."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Debug, Clone)]
pub struct GlobalArgs {
    /// Where keyway keeps its store [default: the XDG data dir, e.g. ~/.local/share/keyway].
    #[arg(long, global = true, env = "KEYWAY_HOME", value_name = "DIR")]
    pub home: Option<PathBuf>,

    /// Print results as JSON on stdout.
    #[arg(long, global = true)]
    pub json: bool,

    /// Log more on stderr (-v info, -vv debug, -vvv trace).
    #[arg(short, long, global = true, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,

    /// Print only results and errors.
    #[arg(short, long, global = true)]
    pub quiet: bool,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run keyway end to end against a built-in test server (nothing is saved).
    Demo(DemoArgs),

    /// Run the test server (an OAuth 2.1 authorization server and a protected MCP
    /// server on 127.0.0.1) in the foreground, until Ctrl-C.
    ///
    /// Prints one JSON line on stdout once listening: {"mcp_url", "issuer", "stats_url"}.
    Testbed(Box<TestbedArgs>),
}

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Text to send through the `echo` tool.
    #[arg(long, default_value = "hello from keyway")]
    pub text: String,
}

#[derive(Args, Debug)]
pub struct TestbedArgs {
    #[command(flatten)]
    pub knobs: keyway_testbed::Knobs,
}
