//! Getting the person (or a program) to the authorization URL: the system browser,
//! launched without a shell; nothing (print it, take a pasted answer); or `follow`,
//! where keyway fetches the URL itself for servers that approve without a person.

use std::{process::Stdio, time::Duration};

use url::Url;

use super::urls::UrlPolicy;

/// How the authorization URL reaches a browser.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum BrowserMode {
    /// The OS browser (or `$BROWSER`).
    #[default]
    System,
    /// Print the URL; take the redirect URL or the code pasted on stdin.
    None,
    /// Fetch the URL and follow its redirects back to the loopback listener.
    Follow,
}

/// Why the authorization page could not be shown to a person, or followed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BrowserError {
    /// The browser program could not be started.
    #[error("cannot start {program}: {reason}")]
    Start {
        /// The program (`$BROWSER`, `xdg-open`, `open`...).
        program: String,
        /// The operating system's reason.
        reason: String,
    },
    /// The browser program ran and failed.
    #[error("{program} failed ({status})")]
    Failed {
        /// The program.
        program: String,
        /// Its exit status, as the operating system words it.
        status: String,
    },
    /// Following the page's redirects (`--browser follow`) failed.
    #[error("following the authorization page failed: {0}")]
    Follow(String),
    /// An [`Opener`] of the caller's own could not show the page.
    #[error("{0}")]
    Opener(String),
}

impl From<String> for BrowserError {
    fn from(why: String) -> Self {
        Self::Opener(why)
    }
}

impl From<&str> for BrowserError {
    fn from(why: &str) -> Self {
        Self::Opener(why.to_owned())
    }
}

/// Something that shows an authorization URL to a person (see
/// [`AuthOptions::opener`](super::AuthOptions::opener)).
pub trait Opener: Send + Sync + std::fmt::Debug {
    /// Show `url`. It runs beside the wait for the callback, so it may finish only
    /// once the page is done. An error means no one will see the page: keyway then
    /// offers to take a pasted answer, when it may read stdin.
    fn open<'a>(&'a self, url: &'a Url)
    -> futures::future::BoxFuture<'a, Result<(), BrowserError>>;
}

/// Whether this session can plausibly show a browser.
pub fn browser_available() -> bool {
    if std::env::var_os("BROWSER").is_some_and(|b| !b.is_empty()) {
        return true;
    }
    if cfg!(target_os = "linux") || cfg!(target_os = "freebsd") || cfg!(target_os = "openbsd") {
        return ["DISPLAY", "WAYLAND_DISPLAY"]
            .iter()
            .any(|v| std::env::var_os(v).is_some_and(|x| !x.is_empty()));
    }
    true
}

/// Launch the system browser on `url` (already checked to be https or loopback
/// http). Arguments go to the program directly; no shell ever sees the URL.
pub async fn open_system(url: &Url) -> Result<(), BrowserError> {
    let (program, mut args): (String, Vec<String>) = match std::env::var("BROWSER") {
        Ok(b) if !b.trim().is_empty() => {
            let mut parts = b.split_whitespace().map(str::to_owned);
            let program = parts.next().unwrap_or_default();
            (program, parts.collect())
        }
        _ if cfg!(target_os = "macos") => ("open".into(), vec![]),
        _ if cfg!(windows) => (
            "rundll32.exe".into(),
            vec!["url.dll,FileProtocolHandler".into()],
        ),
        _ => ("xdg-open".into(), vec![]),
    };
    if args.iter().any(|a| a.contains("%s")) {
        args = args
            .into_iter()
            .map(|a| a.replace("%s", url.as_str()))
            .collect();
    } else {
        args.push(url.to_string());
    }
    let mut command = tokio::process::Command::new(&program);
    command
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // The browser and whatever it starts outlive keyway, and read their environment:
    // none of keyway's own variables (the store key, tokens, secrets) go with it.
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("KEYWAY_") {
            command.env_remove(name);
        }
    }
    let mut child = command.spawn().map_err(|e| BrowserError::Start {
        program: program.clone(),
        reason: e.to_string(),
    })?;
    // Openers return at once; a browser started directly keeps running. Either way
    // its exit status is reaped in the background.
    match tokio::time::timeout(Duration::from_secs(5), child.wait()).await {
        Ok(Ok(status)) if !status.success() => Err(BrowserError::Failed {
            program,
            status: status.to_string(),
        }),
        Ok(Err(e)) => Err(BrowserError::Failed {
            program,
            status: e.to_string(),
        }),
        Ok(Ok(_)) => Ok(()),
        Err(_) => {
            tokio::spawn(async move {
                let _ = child.wait().await;
            });
            Ok(())
        }
    }
}

/// Fetch `url` and follow redirects (cookies kept, at most 10 hops, http(s) only,
/// every hop allowed by `policy` or pointing at our own `redirect_uri`, and every
/// name resolved to addresses `policy` allows). Returns the
/// final status; the loopback listener sees the callback if the server approved.
pub async fn follow(url: &Url, redirect_uri: &str, policy: UrlPolicy) -> Result<u16, BrowserError> {
    let own = redirect_uri.to_owned();
    let redirects = reqwest::redirect::Policy::custom(move |attempt| {
        if attempt.previous().len() >= 10 {
            return attempt.error("more than 10 redirects");
        }
        let next = attempt.url();
        if next.as_str().starts_with(&own) || policy.check_url(next).is_ok() {
            attempt.follow()
        } else {
            let why = format!("refusing to follow a redirect to {next}");
            attempt.error(why)
        }
    });
    let client = crate::http::builder()
        .cookie_store(true)
        .dns_resolver(crate::http::GuardedResolver::new(policy.server))
        .redirect(redirects)
        .timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| BrowserError::Follow(e.to_string()))?;
    let resp = client
        .get(url.clone())
        .send()
        .await
        .map_err(|e| BrowserError::Follow(super::fetch::describe(&e)))?;
    Ok(resp.status().as_u16())
}

/// Lines typed on stdin, read on a blocking thread.
pub fn stdin_lines() -> tokio::sync::mpsc::Receiver<String> {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    std::thread::spawn(move || {
        let mut line = String::new();
        loop {
            line.clear();
            match std::io::stdin().read_line(&mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    if tx.blocking_send(line.trim().to_owned()).is_err() {
                        break;
                    }
                }
            }
        }
    });
    rx
}
