//! Exit codes and the error type that decides them. Errors carry a hint that says
//! what to do next.

use std::{fmt, process::ExitCode};

/// keyway's documented exit codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitStatus {
    Success = 0,
    Failure = 1,
    Usage = 2,
    /// The server needs (new) authorization: run `keyway authorize`.
    AuthorizationNeeded = 3,
}

impl From<ExitStatus> for ExitCode {
    fn from(s: ExitStatus) -> Self {
        ExitCode::from(s as u8)
    }
}

/// An error that ends a command.
pub enum CliError {
    /// Bad command line; clap has the message.
    Usage(clap::Error),
    /// Anything else.
    Failed {
        status: ExitStatus,
        error: anyhow::Error,
        hint: Option<String>,
    },
}

impl CliError {
    pub fn failure(error: impl Into<anyhow::Error>) -> Self {
        Self::Failed {
            status: ExitStatus::Failure,
            error: error.into(),
            hint: None,
        }
    }

    pub fn with_status(self, status: ExitStatus) -> Self {
        match self {
            Self::Failed { error, hint, .. } => Self::Failed {
                status,
                error,
                hint,
            },
            usage => usage,
        }
    }

    pub fn with_hint(self, hint: impl Into<String>) -> Self {
        match self {
            Self::Failed { status, error, .. } => Self::Failed {
                status,
                error,
                hint: Some(hint.into()),
            },
            usage => usage,
        }
    }

    /// The error and its hint in one line, for a report that lists several.
    pub fn message(&self) -> String {
        match self {
            Self::Usage(e) => e.to_string().trim().to_owned(),
            Self::Failed { error, hint, .. } => match hint {
                Some(h) => format!("{error:#} ({h})"),
                None => format!("{error:#}"),
            },
        }
    }

    /// A failed connection: exit 3 when the fix is to authorize.
    pub fn connect(e: keyway::mcp::ConnectError) -> Self {
        if e.needs_authorization() {
            Self::failure(e)
                .with_status(ExitStatus::AuthorizationNeeded)
                .with_hint("the server did not accept the credentials; authorize again")
        } else {
            match e.next_step() {
                Some(step) => Self::failure(e).with_hint(step),
                None => Self::failure(e),
            }
        }
    }

    /// Print the error on stderr and give the exit status. With `json` (the command
    /// line asked for `--json`) the error is also written on stdout as one JSON
    /// document, `{"error": {"kind", "message", "hint"}}`, so a program reading the
    /// output gets JSON whatever happened; the exit status is the same.
    pub fn report(self, json: bool) -> ExitStatus {
        match self {
            Self::Usage(e) => {
                let status = match e.kind() {
                    clap::error::ErrorKind::DisplayHelp
                    | clap::error::ErrorKind::DisplayVersion => ExitStatus::Success,
                    _ => ExitStatus::Usage,
                };
                if json && status != ExitStatus::Success {
                    let message = e
                        .render()
                        .to_string()
                        .lines()
                        .next()
                        .unwrap_or_default()
                        .trim_start_matches("error: ")
                        .to_owned();
                    json_error(status, &message, Some("run with --help for the usage"));
                }
                let _ = e.print();
                status
            }
            Self::Failed {
                status,
                error,
                hint,
            } => {
                if json {
                    let message = error
                        .chain()
                        .map(|c| c.to_string())
                        .collect::<Vec<_>>()
                        .join(": ");
                    json_error(status, &message, hint.as_deref());
                }
                crate::progress::clear();
                eprintln!("{} {error}", crate::progress::paint::error_label());
                for cause in error.chain().skip(1) {
                    eprintln!("  caused by: {cause}");
                }
                if let Some(hint) = hint {
                    eprintln!("  {} {hint}", crate::progress::paint::hint_label());
                }
                status
            }
        }
    }
}

impl ExitStatus {
    /// The error's kind in `--json` output.
    pub fn kind(self) -> &'static str {
        match self {
            Self::Success => "none",
            Self::Failure => "failure",
            Self::Usage => "usage",
            Self::AuthorizationNeeded => "authorization-needed",
        }
    }
}

/// `{"error": {"kind", "message", "hint"}}` on stdout (a reader that left is ignored),
/// unless the command already wrote its JSON result (which then says what went wrong).
fn json_error(status: ExitStatus, message: &str, hint: Option<&str>) {
    if crate::printer::json_written() {
        return;
    }
    let doc = serde_json::json!({
        "error": {"kind": status.kind(), "message": message, "hint": hint}
    });
    let _ = crate::printer::emit(|out| {
        serde_json::to_writer(&mut *out, &doc)?;
        std::io::Write::write_all(out, b"\n")
    });
}

impl fmt::Debug for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Usage(e) => write!(f, "Usage({})", e.kind()),
            Self::Failed {
                status,
                error,
                hint,
            } => f
                .debug_struct("Failed")
                .field("status", status)
                .field("error", &format_args!("{error:#}"))
                .field("hint", hint)
                .finish(),
        }
    }
}

impl<E: Into<anyhow::Error>> From<E> for CliError {
    fn from(e: E) -> Self {
        Self::failure(e)
    }
}
