//! A spinner on stderr for waits a person would otherwise sit through in silence
//! (discovery, a slow server, the browser), and colour for what matters at a glance.
//!
//! The spinner shows only on a terminal, without -q or -v, and only once a wait has
//! lasted [`SHOW_AFTER`]: short waits stay quiet. Everything else keyway writes (the
//! printer's lines, the flow's notes, logs) goes through [`suspend`], which lifts the
//! spinner for the write so lines never run into it.

use std::{
    io::IsTerminal,
    sync::{
        Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How long a wait lasts before the spinner appears.
pub const SHOW_AFTER: Duration = Duration::from_millis(300);

static ENABLED: AtomicBool = AtomicBool::new(false);
/// The spinners that have shown, with the ids of their [`Waiting`]s; only the last
/// one draws (a wait inside a wait, such as the browser during a call, hides the
/// outer one until it ends).
static CURRENT: Mutex<Vec<(u64, ProgressBar)>> = Mutex::new(Vec::new());
static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// Decide once, at start-up, whether spinners may show: stderr a terminal, not quiet,
/// no logs on stderr, and `TERM` not `dumb`.
pub fn init(quiet: bool, verbose: u8, log_file: bool) {
    let dumb = std::env::var_os("TERM").is_some_and(|t| t == "dumb");
    let on = std::io::stderr().is_terminal() && !quiet && (verbose == 0 || log_file) && !dumb;
    ENABLED.store(on, Ordering::Relaxed);
}

fn current() -> std::sync::MutexGuard<'static, Vec<(u64, ProgressBar)>> {
    CURRENT.lock().unwrap_or_else(|p| p.into_inner())
}

/// Run `write` with the spinner (if one shows) lifted off the terminal.
pub fn suspend<T>(write: impl FnOnce() -> T) -> T {
    let bar = current().last().map(|(_, b)| b.clone());
    match bar {
        Some(bar) => bar.suspend(write),
        None => write(),
    }
}

/// Take the spinner off the terminal for good (before the final error is printed).
pub fn clear() {
    for (_, bar) in current().drain(..) {
        bar.finish_and_clear();
    }
}

/// A wait in progress; the spinner goes away when this is dropped.
pub struct Waiting {
    id: u64,
    bar: Option<ProgressBar>,
    shown: Option<tokio::task::JoinHandle<()>>,
}

impl Waiting {
    /// Start waiting for `what` ("discovery at mcp.example.com"). Needs a tokio
    /// runtime; without one (or when spinners are off) it shows nothing.
    pub fn start(what: impl Into<String>) -> Self {
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let off = Self {
            id,
            bar: None,
            shown: None,
        };
        if !ENABLED.load(Ordering::Relaxed) || tokio::runtime::Handle::try_current().is_err() {
            return off;
        }
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden());
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.set_message(what.into());
        let showing = bar.clone();
        let shown = tokio::spawn(async move {
            tokio::time::sleep(SHOW_AFTER).await;
            let mut stack = current();
            if let Some((_, outer)) = stack.last() {
                outer.set_draw_target(ProgressDrawTarget::hidden());
            }
            showing.set_draw_target(ProgressDrawTarget::stderr());
            showing.enable_steady_tick(Duration::from_millis(100));
            stack.push((id, showing));
        });
        Self {
            id,
            bar: Some(bar),
            shown: Some(shown),
        }
    }

    /// Say what is waited for now.
    pub fn set(&self, what: impl Into<String>) {
        if let Some(bar) = &self.bar {
            bar.set_message(what.into());
        }
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if let Some(task) = self.shown.take() {
            task.abort();
        }
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
            let mut stack = current();
            let was_top = stack.last().is_some_and(|(id, _)| *id == self.id);
            stack.retain(|(id, _)| *id != self.id);
            if was_top && let Some((_, outer)) = stack.last() {
                outer.set_draw_target(ProgressDrawTarget::stderr());
            }
        }
    }
}

/// Colours for stdout and stderr, each only on a terminal and without `NO_COLOR`.
pub mod paint {
    use owo_colors::{OwoColorize, Stream};

    /// A server state padded to `width`, coloured by what it asks of the person
    /// (stdout).
    pub fn state(text: &str, width: usize) -> String {
        let padded = format!("{text:<width$}");
        let s = Stream::Stdout;
        match text {
            "ready" | "authorized" | "token" | "ok" => {
                padded.if_supports_color(s, |t| t.green()).to_string()
            }
            "needs-auth" | "needs-token" | "token-rejected" | "timeout" => {
                padded.if_supports_color(s, |t| t.yellow()).to_string()
            }
            "error" => padded.if_supports_color(s, |t| t.red()).to_string(),
            "disabled" => padded.if_supports_color(s, |t| t.dimmed()).to_string(),
            _ => padded,
        }
    }

    /// `error:` on stderr.
    pub fn error_label() -> String {
        "error:"
            .if_supports_color(Stream::Stderr, |t| t.red())
            .to_string()
    }

    /// `hint:` on stderr.
    pub fn hint_label() -> String {
        "hint:"
            .if_supports_color(Stream::Stderr, |t| t.cyan())
            .to_string()
    }

    /// A table's heading row (stdout).
    pub fn heading(text: &str) -> String {
        text.if_supports_color(Stream::Stdout, |t| t.bold())
            .to_string()
    }
}

/// The library's waits ([`keyway::manage::Progress`]) shown as spinners.
#[derive(Debug, Default, Clone, Copy)]
pub struct Spinners;

impl keyway::manage::Progress for Spinners {
    fn waiting(&self, what: String) -> Box<dyn Send> {
        Box::new(Waiting::start(what))
    }
}
