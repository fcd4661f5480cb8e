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
#[command(next_help_heading = "Global options")]
pub struct GlobalArgs {
    /// Where keyway keeps its store [default: the XDG data dir, e.g. ~/.local/share/keyway].
    #[arg(long, global = true, env = "KEYWAY_HOME", value_name = "DIR")]
    pub home: Option<PathBuf>,

    /// Keep servers and credentials in this Postgres database instead of the home's
    /// SQLite file (a team's gateway). No password here: other users see arguments;
    /// put the whole URL in KEYWAY_STORE, or the password in PGPASSWORD. The store key
    /// comes from KEYWAY_STORE_KEY (the same on every machine), never the database.
    #[arg(long, global = true, value_name = "postgres://USER@HOST:PORT/DB")]
    pub store: Option<String>,

    /// Print results as JSON on stdout.
    #[arg(long, global = true)]
    pub json: bool,

    /// Log more on stderr (-v info, -vv debug, -vvv trace).
    #[arg(short, long, global = true, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,

    /// Print only results and errors.
    #[arg(short, long, global = true)]
    pub quiet: bool,

    /// Write logs to this file instead of stderr.
    #[arg(long, global = true, value_name = "FILE")]
    pub log_file: Option<std::path::PathBuf>,

    /// How log lines are written: `text` for people, `json` (one object per line,
    /// with the fields of the request it belongs to) for a log collector.
    #[arg(
        long,
        global = true,
        env = "KEYWAY_LOG_FORMAT",
        value_name = "FORMAT",
        default_value = "text"
    )]
    pub log_format: LogFormat,
}

/// How log lines are written (`--log-format`).
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    // No doc comments here: clap would list them under the flag, at length.
    #[default]
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run keyway end to end against a built-in test server (nothing is saved).
    #[command(after_help = "Examples:\n  keyway demo\n  keyway demo --json")]
    Demo(DemoArgs),

    /// Say what it takes to get into a server, without saving anything.
    ///
    /// Prints the class (open, token-rejected, oauth, token-only, unreachable, error),
    /// every URL discovery tried, the problems found, and the next step.
    #[command(
        after_help = "Examples:\n  keyway probe https://mcp.example.com/mcp\n  keyway probe https://mcp.example.com/mcp --json\n  KEYWAY_TOKEN=... keyway probe https://api.example.com/mcp\n\nRegistration, in the output: `pre-registered` (a client id you already have), `cimd` (a\nclient ID metadata document URL as the client id), `dcr` (dynamic client registration,\nRFC 7591). probe saves nothing, tokens and headers included."
    )]
    Probe(Box<ProbeArgs>),

    /// Add a server: probe it, save it, and authorize it right away if it uses OAuth.
    #[command(
        after_help = "Examples:\n  keyway add https://mcp.example.com/mcp\n  keyway add work https://api.example.com/mcp --token @$HOME/.work-token\n  keyway add linear https://mcp.linear.app/sse -H 'X-Team: eng'\n  keyway add https://old.example.com/sse --transport sse --no-authorize\n\nTokens and header values are stored encrypted."
    )]
    Add(Box<AddArgs>),

    /// List the saved servers with their state and the action each needs.
    #[command(after_help = "Examples:\n  keyway list\n  keyway list --json")]
    List,

    /// Show one saved server (never its secrets).
    #[command(after_help = "Examples:\n  keyway show github")]
    Show(NameArg),

    /// Change a saved server: its URL, transport, headers or name.
    ///
    /// A new URL drops the server's tokens (they were issued for the old one, and are
    /// revoked first); authorize it again afterwards. The token itself is changed with
    /// `keyway set-token`.
    #[command(
        after_help = "Examples:\n  keyway edit github --url https://api.githubcopilot.com/mcp/\n  keyway edit work --header 'X-Api-Key: ${WORK_KEY}' --remove-header X-Old\n  keyway edit old-name --rename new-name\n  keyway edit legacy --transport sse"
    )]
    Edit(Box<EditArgs>),

    /// Authorize (or re-authorize) a saved server.
    #[command(
        after_help = "Examples:\n  keyway authorize github\n  keyway authorize github --device          (no browser on this machine)\n  keyway authorize github --browser none    (print the URL, paste the redirect)"
    )]
    Authorize(Box<AuthorizeArgs>),

    /// Forget a server's tokens, revoking them at the authorization server first.
    #[command(after_help = "Examples:\n  keyway logout github")]
    Logout(NameArg),

    /// Give a saved server a new static token, replacing the one it has.
    ///
    /// The token is read from stdin (not shown on a terminal), from a file (`@FILE`),
    /// or from KEYWAY_TOKEN; never from the command line, where other users of the
    /// machine could read it. It is tried on the server first: one the server refuses
    /// is not saved, and the old one stays.
    #[command(
        after_help = "Examples:\n  keyway set-token github                 (paste it, then Enter)\n  keyway set-token github @$HOME/.github-token\n  pass show github | keyway set-token github -"
    )]
    SetToken(SetTokenArgs),

    /// Remove a saved server and its credential.
    #[command(after_help = "Examples:\n  keyway remove github")]
    Remove(NameArg),

    /// Use a saved server again.
    #[command(after_help = "Examples:\n  keyway enable github")]
    Enable(NameArg),

    /// Keep a saved server but stop using it.
    #[command(after_help = "Examples:\n  keyway disable github")]
    Disable(NameArg),

    /// Re-check saved servers (all, or the named ones) and update their state: connect,
    /// list tools, record what happened.
    ///
    /// Exit 0 when every enabled one answered, 3 when the others need authorization,
    /// 1 otherwise.
    #[command(
        after_help = "Examples:\n  keyway check\n  keyway check github --timeout 5\n  keyway check --json"
    )]
    Check(CheckArgs),

    /// Where the store and its key live, each server checked again, pending flows.
    ///
    /// Creates nothing: without a store it says so. Exit 1 when something is wrong (a
    /// server that does not answer, a credential that cannot be opened, a home others
    /// can read), 3 when servers only need authorization.
    #[command(
        after_help = "Examples:\n  keyway doctor\n  keyway doctor --json\n  keyway doctor --offline      (no server is contacted)"
    )]
    Doctor(DoctorArgs),

    /// Add the remote servers of MCP client configs (Claude Desktop, Claude Code,
    /// Cursor, VS Code), mcp-remote bridges included.
    #[command(
        after_help = "Examples:\n  keyway import                      (every client config in its usual place)\n  keyway import --from cursor\n  keyway import .vscode/mcp.json\n\nRunning it again adds only what is new: a URL keyway has already is reported as there.\nmcp-remote entries are read (URL, --header, --transport); a token that is still a\nplaceholder (${input:...}, an unset ${VAR}) is not saved: keyway set-token NAME gives it."
    )]
    Import(ImportArgs),

    /// Print the config snippet that runs `keyway proxy NAME` for each saved server (or
    /// the named ones), or write it into the client's config file.
    ///
    /// With --write, the client's config is edited in place (comments and the other
    /// entries kept): each server's entry is added or replaced, and an entry that ran
    /// mcp-remote for the same URL is rewritten to keyway proxy. The old file is kept
    /// beside it (.keyway.bak) and the change is shown as a diff.
    #[command(
        after_help = "Examples:\n  keyway export --format claude\n  keyway export github --format vscode\n  keyway export --format claude --write            (edits claude_desktop_config.json)\n  keyway export --format claude-code --write --dry-run\n  keyway export --format cursor --write --config ./.cursor/mcp.json"
    )]
    Export(ExportArgs),

    /// List the tools of every enabled server (or the named ones), all at once: a slow
    /// or failing server is reported in its own row and never delays the others beyond
    /// its timeout. Names are prefixed by server (`github__search`).
    #[command(
        after_help = "Examples:\n  keyway tools\n  keyway tools github linear --timeout 5\n  keyway tools github --schema          (each tool's input schema)\n  keyway call github__search_issues --args '{}'   (a name as printed here)"
    )]
    Tools(ToolsArgs),

    /// List the prompts of every enabled server (or the named ones), as `prefix__name`.
    #[command(after_help = "Examples:\n  keyway prompts\n  keyway prompts github --json")]
    Prompts(ListArgs),

    /// List the resources of every enabled server (or the named ones): server, URI,
    /// description.
    #[command(after_help = "Examples:\n  keyway resources\n  keyway resources docs --json")]
    Resources(ListArgs),

    /// One MCP server in front of every enabled saved server: their tools and prompts
    /// (as `prefix__name`) and resources, each call routed to its server. On stdio by
    /// default; Streamable HTTP with --listen.
    #[command(
        after_help = "Examples:\n  keyway serve                                  (stdio, for one MCP client)\n  keyway serve --listen 127.0.0.1:8931 --token-file ~/.keyway-serve-token\n  keyway serve --listen 0.0.0.0:8931 --token-file /run/secrets/token --check-config\n\nProbes (no token needed): GET /healthz answers 200 while the gateway serves; GET /readyz\nanswers 200 when its store answers, else 503."
    )]
    Serve(Box<ServeArgs>),

    /// Bridge a local MCP client (stdio) to a remote server: every message both ways,
    /// authorizing, refreshing and reconnecting as needed. Only MCP frames go to stdout;
    /// logs go to stderr (or --log-file).
    ///
    /// In an MCP client config: {"command": "keyway", "args": ["proxy", "NAME"]}
    /// (`keyway export` prints it).
    #[command(
        after_help = "Examples:\n  keyway proxy github\n  keyway proxy https://mcp.example.com/mcp\n  In a client's config: {\"command\": \"keyway\", \"args\": [\"proxy\", \"github\"]}"
    )]
    Proxy(Box<ProxyArgs>),

    /// Call one tool, authorizing as needed: connect, list tools, call, print the
    /// result.
    ///
    /// keyway call NAME TOOL [--args JSON]          (a saved server)
    /// keyway call NAME__TOOL [--args JSON]         (the name `keyway tools` prints)
    /// keyway call --url URL TOOL [--args JSON]     (any server, nothing saved)
    #[command(
        after_help = "Examples:\n  keyway call github search_issues --args '{\"query\": \"is:open\"}'\n  keyway call github__search_issues --args @query.json\n  echo '{\"text\": \"hi\"}' | keyway call --url https://mcp.example.com/mcp echo --args -"
    )]
    Call(Box<CallArgs>),

    /// Open the settings page in the browser: the saved servers as cards, adding
    /// (with a probe while you type), authorizing, tokens, tools. Runs until Ctrl-C,
    /// or until its last tab has been closed for a while.
    ///
    /// The page is served on 127.0.0.1 only, to the browser that opens its one-time
    /// link. Whatever is added there works at once in `keyway proxy`, `keyway serve`
    /// and every exported client config: it is the same store.
    #[command(
        after_help = "Examples:\n  keyway ui\n  keyway ui --no-open            (print the link instead of opening it)\n  keyway ui --listen 8765        (a fixed port, e.g. for a forwarded one)"
    )]
    Ui(Box<UiArgs>),

    /// Print the shell completion script for bash, zsh, fish, elvish or powershell.
    #[command(
        after_help = "Examples:\n  keyway completions bash > ~/.local/share/bash-completion/completions/keyway\n  keyway completions zsh > ~/.zfunc/_keyway        (with fpath+=~/.zfunc)\n  keyway completions fish > ~/.config/fish/completions/keyway.fish"
    )]
    Completions(CompletionsArgs),

    /// Run the test server (an OAuth 2.1 authorization server and a protected MCP
    /// server on 127.0.0.1) in the foreground, until Ctrl-C.
    ///
    /// Prints one JSON line on stdout once listening: {"mcp_url", "issuer", "stats_url"}.
    #[command(after_help = "Examples:\n  keyway testbed\n  keyway testbed --open")]
    Testbed(Box<TestbedArgs>),
}

#[derive(Args, Debug)]
pub struct UiArgs {
    /// The loopback port to serve on (`PORT` or `127.0.0.1:PORT`); a free one when
    /// not given.
    #[arg(long, value_name = "PORT", value_parser = ui_port)]
    pub listen: Option<u16>,

    /// Print the page's link instead of opening a browser.
    #[arg(long)]
    pub no_open: bool,

    /// Seconds after the last tab closed before the page ends (0: only Ctrl-C ends it).
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    pub idle_exit: u64,

    #[command(flatten)]
    pub auth: AuthArgs,
}

/// `--listen` of `keyway ui`: a port, on 127.0.0.1 and nowhere else.
fn ui_port(s: &str) -> Result<u16, String> {
    let port = match s.rsplit_once(':') {
        Some((host, port)) => {
            if host != "127.0.0.1" && host != "localhost" {
                return Err(format!(
                    "the settings page is served on 127.0.0.1 only, not {host}"
                ));
            }
            port
        }
        None => s,
    };
    port.parse::<u16>()
        .map_err(|_| format!("{port:?} is not a port number"))
}

#[derive(Args, Debug)]
pub struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Text to send through the `echo` tool.
    #[arg(long, default_value = "hello from keyway")]
    pub text: String,
}

#[derive(Args, Debug)]
pub struct CallArgs {
    /// Call a server that is not saved: its MCP URL (Streamable HTTP endpoint).
    #[arg(long, value_name = "URL", value_parser = server_url)]
    pub url: Option<String>,

    /// NAME TOOL for a saved server (or NAME__TOOL, as `keyway tools` prints it); TOOL
    /// with --url.
    #[arg(value_name = "NAME TOOL", num_args = 1..=2, required = true)]
    pub target: Vec<String>,

    /// Tool arguments as a JSON object; `@FILE` reads them from a file, `-` from stdin.
    #[arg(long, value_name = "JSON|@FILE|-", default_value = "{}")]
    pub args: String,

    /// The MCP revision to speak: `auto` asks the server (`server/discover`) and
    /// speaks 2026-07-28 when it can, else the 2025-11-25 handshake; a revision
    /// speaks only that one (2026-07-28, 2025-11-25, 2025-06-18, 2025-03-26).
    #[arg(long, value_name = "REVISION", default_value = "auto")]
    pub protocol: keyway::mcp::Protocol,

    #[command(flatten)]
    pub auth: AuthArgs,

    #[command(flatten)]
    pub deadlines: DeadlineArgs,
}

#[derive(Args, Debug)]
pub struct ToolsArgs {
    /// Only these servers (names or ids).
    pub names: Vec<String>,

    /// Seconds each server gets to connect and list what it has.
    #[arg(long, value_name = "SECS", default_value_t = 10.0, value_parser = seconds)]
    pub timeout: f64,

    /// Print each tool's input schema (JSON) under it.
    #[arg(long)]
    pub schema: bool,
}

#[derive(Args, Debug)]
pub struct ListArgs {
    /// Only these servers (names or ids).
    pub names: Vec<String>,

    /// Seconds each server gets to connect and list what it has.
    #[arg(long, value_name = "SECS", default_value_t = 10.0, value_parser = seconds)]
    pub timeout: f64,
}

impl From<ListArgs> for ToolsArgs {
    fn from(a: ListArgs) -> Self {
        Self {
            names: a.names,
            timeout: a.timeout,
            schema: false,
        }
    }
}

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// Only these servers (names or ids).
    pub names: Vec<String>,

    /// Seconds each server gets to connect and list its tools.
    #[arg(long, value_name = "SECS", default_value_t = 10.0, value_parser = seconds)]
    pub timeout: f64,
}

#[derive(Args, Debug)]
pub struct DoctorArgs {
    /// Do not contact the servers; report what is stored.
    #[arg(long)]
    pub offline: bool,

    /// Seconds each server gets to connect and list its tools.
    #[arg(long, value_name = "SECS", default_value_t = 10.0, value_parser = seconds)]
    pub timeout: f64,
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Serve Streamable HTTP at this address (e.g. 127.0.0.1:8788) instead of stdio.
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Option<std::net::SocketAddr>,

    /// A file holding the token clients must send (Authorization: Bearer), readable
    /// by you only. Without it, keyway makes one in its home (gateway.token) and says
    /// where; a token is always required. Required when listening beyond loopback.
    /// With --authorization-server it opens /metrics only (for a scraper).
    #[arg(long, value_name = "FILE", requires = "listen")]
    pub token_file: Option<std::path::PathBuf>,

    /// Connections served at once; more wait until one ends.
    #[arg(long, value_name = "N", default_value_t = keyway::gateway::edge::DEFAULT_MAX_CONNECTIONS as u32, value_parser = clap::value_parser!(u32).range(1..=65_536), requires = "listen")]
    pub max_connections: u32,

    /// Another Host name the listener answers to (DNS rebinding protection refuses the
    /// rest); may repeat.
    #[arg(long, value_name = "HOST", requires = "listen")]
    pub allowed_host: Vec<String>,

    /// Hide tools whose name (`tool` or `prefix__tool`) matches PATTERN (`*` is any
    /// run of characters): not listed, not callable (may repeat).
    #[arg(long, value_name = "PATTERN")]
    pub ignore_tool: Vec<String>,

    /// Seconds a call to a server may go without its answer or a progress report before
    /// the gateway gives up on it (each report starts the wait again; 30 minutes at most
    /// in all).
    #[arg(long, value_name = "SECONDS", default_value_t = keyway::gateway::upstream::REQUEST_TIMEOUT.as_secs(), value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub request_timeout: u64,

    /// The MCP revision to speak to the servers: `auto` asks each (`server/discover`):
    /// one that speaks only 2026-07-28 gets that, one that speaks both gets the
    /// handshake for handshake-era clients and 2026-07-28 requests for 2026-07-28
    /// clients; `2026-07-28` only that; a handshake revision never asks. Clients of
    /// either generation are served whatever this says.
    #[arg(long, value_name = "REVISION", default_value = "auto")]
    pub protocol: keyway::mcp::Protocol,

    /// How tools and prompts are named: `always` as `server__name`; `conditional`
    /// without the prefix when one server is enabled; `never` as the servers name them
    /// (where two use one name, the first server wins, and the start says so).
    #[arg(long, value_name = "MODE", default_value = "always")]
    pub prefix: keyway::gateway::PrefixMode,

    /// A web origin (https://chat.example) whose pages may call the gateway, with its
    /// token, from the browser (CORS); may repeat. None by default.
    #[arg(long, value_name = "ORIGIN")]
    pub cors_origin: Vec<String>,

    /// Check what the gateway would start with and exit: the flags, the token file, the
    /// store and its key, each enabled server's URL, headers and credential. Contacts
    /// no server and listens on nothing; exits 1 when something would fail.
    #[arg(long)]
    pub check_config: bool,

    #[command(flatten)]
    pub sign_in: SignInArgs,

    #[command(flatten)]
    pub deadlines: DeadlineArgs,
}

/// A team's gateway: callers sign in with the organisation's authorization server.
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Team sign-in")]
pub struct SignInArgs {
    /// The organisation's authorization server (its issuer URL). Callers sign in there
    /// and send its access tokens, issued for this gateway, instead of the gateway's
    /// token; the gateway publishes protected resource metadata naming it.
    #[arg(long, value_name = "ISSUER", requires = "listen")]
    pub authorization_server: Option<String>,

    /// The URL clients reach the gateway at (behind a load balancer, the balancer's),
    /// such as https://mcp.example.com/mcp: every token must be issued for it. Default:
    /// http://ADDR:PORT/mcp of --listen, which must then be a loopback address.
    #[arg(long, value_name = "URL", requires = "authorization_server")]
    pub public_url: Option<url::Url>,

    /// A scope every caller's token must carry (may repeat).
    #[arg(long, value_name = "SCOPE", requires = "authorization_server")]
    pub require_scope: Vec<String>,

    /// Check tokens by asking the authorization server (introspection, RFC 7662) as
    /// this client of it, instead of verifying them as JWTs with its published keys.
    /// The client's secret comes from --introspection-secret-file or the environment
    /// variable KEYWAY_INTROSPECTION_SECRET.
    #[arg(long, value_name = "CLIENT_ID", requires = "authorization_server")]
    pub introspection_client: Option<String>,

    /// A file holding the introspection client's secret, readable by you only.
    #[arg(long, value_name = "FILE", requires = "introspection_client")]
    pub introspection_secret_file: Option<std::path::PathBuf>,
}

/// The time limits on each request to a server.
#[derive(Args, Debug, Clone, Copy)]
#[command(next_help_heading = "Time limits")]
pub struct DeadlineArgs {
    /// Seconds to open a connection to a server (all its addresses, TLS included).
    #[arg(long, value_name = "SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=600))]
    pub connect_timeout: u64,

    /// Seconds a server may take to start answering a request.
    #[arg(long, value_name = "SECS", default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub answer_timeout: u64,

    /// Seconds a server may go silent in the middle of an answer (an event stream
    /// without events or keep-alives).
    #[arg(long, value_name = "SECS", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub idle_timeout: u64,
}

impl DeadlineArgs {
    /// As the library takes them.
    pub fn deadlines(&self) -> keyway::http::Deadlines {
        use std::time::Duration;
        keyway::http::Deadlines {
            connect: Duration::from_secs(self.connect_timeout),
            first_byte: Duration::from_secs(self.answer_timeout),
            idle: Duration::from_secs(self.idle_timeout),
        }
    }

    /// keyway's HTTP client for MCP servers, connecting within the connect limit.
    pub fn client(&self) -> anyhow::Result<keyway::http::WireClient> {
        use anyhow::Context;
        keyway::http::WireClient::new(&self.deadlines()).context("building the HTTP client")
    }
}

#[derive(Args, Debug)]
pub struct ProxyArgs {
    /// A saved server's name, or a URL. The tokens obtained for a URL are kept in the
    /// server saved for it (one is saved, named after its host, if there is none), so
    /// a restart of the client does not authorize again.
    pub target: String,

    /// The transport for a URL not saved yet: `http` (Streamable HTTP), `sse` (legacy
    /// HTTP+SSE), or `auto`: Streamable HTTP, else legacy SSE, found once when the
    /// URL's server is saved (with --token and no --save, only a URL ending in /sse is
    /// checked, as that runs on every start).
    #[arg(long, value_enum, default_value_t = TransportArg::Auto)]
    pub transport: TransportArg,

    /// The name to save a URL's server under [default: after its host, e.g. github].
    /// A token given with --token is kept only with --save.
    #[arg(long, value_name = "NAME")]
    pub save: Option<String>,

    /// Hide tools whose name matches PATTERN (`*` is any run of characters, e.g.
    /// 'delete_*'): left out of tools/list, and a call of one is refused (may repeat).
    #[arg(long, value_name = "PATTERN")]
    pub ignore_tool: Vec<String>,

    /// The MCP revision to speak to the server: `auto` asks it (`server/discover`)
    /// and speaks 2026-07-28 when it can, translating for a client of an older
    /// revision, else passes the client's own handshake through; `2026-07-28` only
    /// that (translated); a handshake revision passes the client's handshake through
    /// without asking.
    #[arg(long, value_name = "REVISION", default_value = "auto")]
    pub protocol: keyway::mcp::Protocol,

    #[command(flatten)]
    pub credential: CredentialArgs,

    #[command(flatten)]
    pub auth: AuthArgs,

    #[command(flatten)]
    pub deadlines: DeadlineArgs,
}

#[derive(Args, Debug)]
pub struct SetTokenArgs {
    /// The server's name (or id).
    pub name: String,

    /// Where the token is: `-` (stdin, the default) or `@FILE`.
    #[arg(value_name = "-|@FILE")]
    pub from: Option<String>,

    /// Save it even when the server cannot be reached to try it.
    #[arg(long)]
    pub no_check: bool,
}

#[derive(Args, Debug)]
pub struct EditArgs {
    /// The server's name (or id).
    pub name: String,

    /// Its new MCP URL.
    #[arg(long, value_name = "URL", value_parser = server_url)]
    pub url: Option<String>,

    /// Its transport: `http` (Streamable HTTP) or `sse` (legacy HTTP+SSE).
    #[arg(long, value_enum)]
    pub transport: Option<TransportArg>,

    /// Add or replace a header, e.g. 'X-Api-Key: abc' (may repeat; `@FILE` and
    /// `${VAR}` as in add).
    #[arg(short = 'H', long = "header", value_name = "'NAME: VALUE'")]
    pub headers: Vec<String>,

    /// Remove a header by name (may repeat).
    #[arg(long, value_name = "NAME")]
    pub remove_header: Vec<String>,

    /// A new name.
    #[arg(long, value_name = "NAME")]
    pub rename: Option<String>,

    /// Behind a team gateway (`keyway serve --authorization-server`), each person
    /// authorizes this server as themselves, through a link the gateway gives them;
    /// the server's own credential is not used.
    #[arg(long, conflicts_with = "shared")]
    pub per_person: bool,

    /// Undo --per-person: the gateway uses the server's own credential for everyone.
    #[arg(long)]
    pub shared: bool,

    /// Allow plain http to a non-loopback host for the server's headers or token
    /// (development only).
    #[arg(long)]
    pub allow_http: bool,
}

#[derive(Args, Debug)]
pub struct NameArg {
    /// The server's name (or id).
    pub name: String,
}

/// A token and headers to send.
#[derive(Args, Debug, Clone)]
pub struct CredentialArgs {
    /// A static access token (sent as Authorization: Bearer). `@FILE` reads it from a
    /// file; KEYWAY_TOKEN also works and keeps it out of the process list.
    #[arg(
        long,
        value_name = "TOKEN|@FILE",
        env = "KEYWAY_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,

    /// An extra header for every request, e.g. 'X-Api-Key: abc' (may repeat). A value
    /// `@FILE` is read from FILE; `${VAR}` is replaced by the environment variable.
    /// 'Authorization: Bearer TOKEN' is taken as the token (as mcp-remote does).
    #[arg(short = 'H', long = "header", value_name = "'NAME: VALUE'")]
    pub headers: Vec<String>,
}

#[derive(Args, Debug)]
pub struct ProbeArgs {
    /// The MCP server URL.
    #[arg(value_parser = server_url)]
    pub url: String,

    #[command(flatten)]
    pub credential: CredentialArgs,

    /// A pre-registered client id you could use (changes what "oauth" means).
    #[arg(long, value_name = "ID")]
    pub client_id: Option<String>,

    /// A client ID metadata document URL you could use.
    #[arg(long, value_name = "URL")]
    pub client_metadata_url: Option<String>,

    /// Allow plain http to non-loopback authorization servers (development only).
    #[arg(long)]
    pub allow_http: bool,
}

#[derive(Args, Debug)]
pub struct AddArgs {
    /// The MCP server URL, or its name and URL (`keyway add github https://...`, as
    /// `claude mcp add` takes them).
    #[arg(value_name = "[NAME] URL", num_args = 1..=2, required = true)]
    pub target: Vec<String>,

    /// The URL, from `target` ([`AddArgs::resolve`]).
    #[arg(skip)]
    pub url: String,

    /// Its name in keyway [default: from the host, e.g. api.github.com -> github].
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,

    /// A stable id chosen by the caller, so a retried add never makes a duplicate.
    #[arg(long, value_name = "ID")]
    pub id: Option<String>,

    #[command(flatten)]
    pub credential: CredentialArgs,

    /// The transport: `http` (Streamable HTTP), `sse` (legacy HTTP+SSE), or `auto`
    /// (Streamable HTTP, falling back to legacy SSE as old servers need).
    #[arg(long, value_enum, default_value_t = TransportArg::Auto)]
    pub transport: TransportArg,

    /// Save an OAuth (or token-only) server without authorizing it now.
    #[arg(long)]
    pub no_authorize: bool,

    /// Replace the saved server of the same name (its tokens are revoked once the new
    /// one is saved), and save the server even when it is unreachable or answers with
    /// an error.
    #[arg(long)]
    pub force: bool,

    #[command(flatten)]
    pub auth: AuthArgs,
}

impl AddArgs {
    /// Fill `url` (and `name`) from the positional arguments: `URL` or `NAME URL`.
    pub fn resolve(&mut self) -> Result<(), String> {
        let (name, url) = match self.target.as_slice() {
            [url] => (None, url.clone()),
            [name, url] => (Some(name.clone()), url.clone()),
            _ => return Err("give the URL, or a name and the URL".into()),
        };
        if let Some(n) = name {
            if self.name.as_ref().is_some_and(|given| *given != n) {
                return Err(format!(
                    "the name is given twice ({n} and --name {}); give it once",
                    self.name.as_deref().unwrap_or_default()
                ));
            }
            self.name = Some(n);
        }
        self.url = server_url(&url)?;
        Ok(())
    }
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransportArg {
    Http,
    Sse,
    /// Streamable HTTP, else the legacy HTTP+SSE transport.
    Auto,
}

#[derive(Args, Debug)]
pub struct AuthorizeArgs {
    /// The server's name (or id).
    pub name: String,

    #[command(flatten)]
    pub auth: AuthArgs,
}

#[derive(Args, Debug)]
pub struct ImportArgs {
    /// The config file (JSON or JSONC), e.g. claude_desktop_config.json,
    /// ~/.cursor/mcp.json, .vscode/mcp.json, .mcp.json [default: every client config
    /// found in its usual place].
    pub file: Option<std::path::PathBuf>,

    /// Without a file: only this client's usual config files.
    #[arg(long, value_enum, value_name = "CLIENT", conflicts_with = "file")]
    pub from: Option<ImportClient>,
}

/// An MCP client whose config keyway reads.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImportClient {
    /// Claude Desktop (claude_desktop_config.json).
    Claude,
    /// Claude Code (~/.claude.json and the project's .mcp.json).
    ClaudeCode,
    /// Cursor (~/.cursor/mcp.json and the project's .cursor/mcp.json).
    Cursor,
    /// VS Code (the user's mcp.json and the project's .vscode/mcp.json).
    Vscode,
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// Only these servers (names or ids) [default: every enabled one].
    pub names: Vec<String>,

    /// The client the entries are for.
    #[arg(long, value_enum)]
    pub format: ExportFormat,

    /// Write the entries into the client's config file instead of printing them.
    #[arg(long)]
    pub write: bool,

    /// The config file --write edits [default: the client's usual one: Claude
    /// Desktop's claude_desktop_config.json, ./.mcp.json for Claude Code,
    /// ~/.cursor/mcp.json, ./.vscode/mcp.json].
    #[arg(long, value_name = "FILE", requires = "write")]
    pub config: Option<std::path::PathBuf>,

    /// With --write: show the diff, change nothing.
    #[arg(long, requires = "write")]
    pub dry_run: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportFormat {
    /// Claude Desktop (`mcpServers`).
    Claude,
    /// Claude Code (`.mcp.json`: `mcpServers` with `"type": "stdio"`).
    ClaudeCode,
    /// Cursor (`mcpServers`).
    Cursor,
    /// VS Code (`servers` with `"type": "stdio"`).
    Vscode,
}

/// How to authorize when a server asks for it.
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Authorization")]
pub struct AuthArgs {
    /// How the authorization URL reaches a browser: `system` (open the OS browser),
    /// `none` (print the URL; paste the redirect URL or the code on stdin), `follow`
    /// (keyway follows the redirects itself, for servers that approve without a person).
    #[arg(long, value_enum, default_value_t = BrowserArg::System)]
    pub browser: BrowserArg,

    /// Use the device authorization grant (RFC 8628): a code to enter on another device.
    #[arg(long, conflicts_with = "client_credentials")]
    pub device: bool,

    /// Authorize as a machine with client credentials (needs --client-id and
    /// --client-secret or --private-key).
    #[arg(long, requires = "client_id")]
    pub client_credentials: bool,

    /// A pre-registered client id at the authorization server.
    #[arg(long, value_name = "ID")]
    pub client_id: Option<String>,

    /// Its secret: `@FILE` reads it from a file. Prefer KEYWAY_CLIENT_SECRET or @FILE: a
    /// value given here is visible to other users in the process list.
    #[arg(
        long,
        value_name = "SECRET|@FILE",
        env = "KEYWAY_CLIENT_SECRET",
        hide_env_values = true
    )]
    pub client_secret: Option<String>,

    /// How the client authenticates at the token endpoint [default: from the secret or
    /// key and what the server supports].
    #[arg(long, value_enum, value_name = "METHOD")]
    pub client_auth: Option<ClientAuthArg>,

    /// A PEM private key for private_key_jwt (EC, RSA or Ed25519).
    #[arg(long, value_name = "FILE")]
    pub private_key: Option<std::path::PathBuf>,

    /// The JWS algorithm for --private-key [default: from the key type].
    #[arg(long, value_name = "ALG", requires = "private_key")]
    pub signing_alg: Option<String>,

    /// Metadata for a dynamic registration, as JSON or `@FILE`: client_name, scope,
    /// client_uri, logo_uri, contacts, tos_uri, policy_uri (mcp-remote's
    /// --static-oauth-client-metadata). Used when keyway registers anew.
    #[arg(long, value_name = "JSON|@FILE")]
    pub registration_metadata: Option<String>,

    /// An https URL serving keyway's client ID metadata document; used when the
    /// authorization server supports them.
    #[arg(long, value_name = "URL")]
    pub client_metadata_url: Option<String>,

    /// Enterprise-managed authorization: the identity provider's token endpoint, where
    /// the ID token is exchanged for an ID-JAG (needs --id-token and --client-id).
    #[arg(long, value_name = "URL", requires_all = ["id_token", "client_id"])]
    pub idp_token_endpoint: Option<String>,

    /// keyway's client id at the identity provider.
    #[arg(long, value_name = "ID", requires = "idp_token_endpoint")]
    pub idp_client_id: Option<String>,

    /// Its secret at the identity provider (`@FILE` reads a file).
    #[arg(
        long,
        value_name = "SECRET|@FILE",
        env = "KEYWAY_IDP_CLIENT_SECRET",
        hide_env_values = true
    )]
    pub idp_client_secret: Option<String>,

    /// The person's ID token from the identity provider (`@FILE` reads a file).
    #[arg(
        long,
        value_name = "TOKEN|@FILE",
        env = "KEYWAY_ID_TOKEN",
        hide_env_values = true
    )]
    pub id_token: Option<String>,

    /// Authorize with a JWT this workload already holds (workload identity federation;
    /// RFC 7523 jwt-bearer grant). `@FILE` reads it from a file. Needs --client-id.
    #[arg(
        long,
        value_name = "JWT|@FILE",
        env = "KEYWAY_ASSERTION",
        hide_env_values = true,
        requires = "client_id"
    )]
    pub assertion: Option<String>,

    /// Scopes to ask for (space separated) instead of the server's challenge.
    #[arg(long, value_name = "SCOPES")]
    pub scope: Option<String>,

    /// A fixed loopback callback port (for a registration with an exact redirect URI).
    #[arg(long, value_name = "PORT")]
    pub callback_port: Option<u16>,

    /// The host in the redirect URI of a pre-registered client (or a client ID
    /// metadata document): `127.0.0.1`, or `localhost` when the registration names it.
    #[arg(long, value_enum, value_name = "HOST", default_value_t = CallbackHostArg::Ip)]
    pub callback_host: CallbackHostArg,

    /// Seconds to wait for the browser to come back.
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    pub auth_timeout: u64,

    /// Allow plain http to non-loopback authorization servers (development only).
    #[arg(long)]
    pub allow_http: bool,

    /// Bind tokens to a key keyway holds (DPoP, RFC 9449), so a stolen token is
    /// useless elsewhere: `auto` when both servers take it (the authorization server
    /// offers ES256, the MCP server challenges with DPoP) or the MCP server takes
    /// nothing else; `always` (a server that cannot is an error); `never`.
    #[arg(long, value_enum, value_name = "WHEN", default_value_t = DpopArg::Auto)]
    pub dpop: DpopArg,

    /// The identity-provider profile: `auto` picks it by the issuer (entra, google,
    /// auth0, okta, keycloak, github; `keyway probe` says which and what it changes),
    /// `none` turns profiles off, a name forces one (a provider behind its own domain).
    #[arg(long, value_name = "NAME", default_value = "auto", value_parser = profile_choice)]
    pub profile: keyway::auth::profile::ProfileChoice,

    /// Leave the `resource` parameter (RFC 8707) out of every request, for
    /// authorization servers that refuse it.
    #[arg(long)]
    pub no_resource: bool,

    /// One more authorization request parameter, KEY=VALUE (repeatable; replaces the
    /// profile's of the same name), e.g. `--authorize-param prompt=consent`.
    #[arg(long, value_name = "KEY=VALUE", value_parser = authorize_param)]
    pub authorize_param: Vec<(String, String)>,

    /// One more parameter for every token request, refresh included, KEY=VALUE
    /// (repeatable), e.g. `--token-param audience=https://api.example.com`;
    /// `KEY=@FILE` reads the value from a file, for a value others must not see in
    /// the process list.
    #[arg(long, value_name = "KEY=VALUE", value_parser = token_param)]
    pub token_param: Vec<(String, String)>,
}

fn profile_choice(
    s: &str,
) -> Result<keyway::auth::profile::ProfileChoice, keyway::auth::profile::UnknownProfile> {
    s.parse()
}

fn authorize_param(s: &str) -> Result<(String, String), keyway::auth::profile::ParamError> {
    keyway::auth::profile::parse_param(keyway::auth::profile::ParamFor::Authorize, s)
}

fn token_param(s: &str) -> Result<(String, String), keyway::auth::profile::ParamError> {
    keyway::auth::profile::parse_param(keyway::auth::profile::ParamFor::Token, s)
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum DpopArg {
    Auto,
    Always,
    Never,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallbackHostArg {
    #[value(name = "127.0.0.1")]
    Ip,
    Localhost,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum BrowserArg {
    System,
    None,
    Follow,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
#[value(rename_all = "snake_case")]
pub enum ClientAuthArg {
    None,
    ClientSecretBasic,
    ClientSecretPost,
    PrivateKeyJwt,
}

#[derive(Args, Debug)]
pub struct TestbedArgs {
    #[command(flatten)]
    pub knobs: keyway_testbed::Knobs,
}

/// A number of seconds for a wait: more than 0, less than an hour.
pub fn seconds(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v < 3600.0 => Ok(v),
        _ => Err("a number of seconds between 0 and 3600, e.g. 2.5".into()),
    }
}

/// A server's URL on the command line: http or https, with a host. Without a scheme it
/// is a usage error that suggests the https URL (keyway does not guess a scheme: the
/// token would go wherever the guess leads).
pub fn server_url(s: &str) -> Result<String, String> {
    let t = s.trim();
    if !t.contains("://") {
        return Err(format!(
            "a server URL starts with its scheme: did you mean https://{}?",
            t.trim_start_matches('/')
        ));
    }
    let u = url::Url::parse(t).map_err(|e| format!("not a URL ({e})"))?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err(format!(
            "keyway reaches MCP servers over https (or http), not {}:",
            u.scheme()
        ));
    }
    if u.host_str().is_none_or(str::is_empty) {
        return Err("the URL names no host".into());
    }
    Ok(t.to_owned())
}
