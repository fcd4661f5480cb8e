//! `keyway ui`: the settings page ([`keyway::web`]) on 127.0.0.1, opened in the
//! browser through a one-time link.

use std::{io::Write, time::Duration};

use anyhow::Context;
use keyway::web::{Ui, UiOptions};

use super::{auth, store, testbed_signals::StopSignals};
use crate::{cli::UiArgs, exit::CliError, printer::Printer, settings::Settings};

pub async fn run(args: UiArgs, settings: &Settings, printer: &Printer) -> Result<(), CliError> {
    let stop = StopSignals::install()?;
    let options = auth::options(&args.auth)?;
    let st = store::open(settings).await?;
    let http =
        keyway::http::WireClient::new(&Default::default()).context("building the HTTP client")?;
    let port = args.listen.unwrap_or(0);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .map_err(|e| {
            CliError::failure(anyhow::anyhow!("cannot listen on 127.0.0.1:{port}: {e}"))
                .with_hint("pick another --listen port, or leave it out for a free one")
        })?;
    let port = listener
        .local_addr()
        .context("reading the listener's address")?
        .port();
    let (ui, secret) = Ui::new(
        st,
        http,
        UiOptions {
            auth: options,
            idle_exit: (args.idle_exit > 0).then(|| Duration::from_secs(args.idle_exit)),
            store_label: settings.home.display().to_string(),
        },
        port,
    );
    let link = ui.login_url(&secret);
    let opened = if args.no_open || !keyway::auth::browser::browser_available() {
        None
    } else {
        open(&settings.home, port, link.expose()).await
    };
    // The link goes to stdout alone on its line (scripts read it), never to the logs
    // or a process's arguments. It opens the page once; when the browser was opened
    // here it is a fallback, used up as soon as the browser got there.
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{}", link.expose()).context("writing to stdout")?;
        out.flush().context("writing to stdout")?;
    }
    match &opened {
        Some(file) => {
            printer.step(format!(
                "keyway ui: the settings page is opening in your browser (127.0.0.1:{port}); if it does not, open the link above. Ctrl-C ends it"
            ));
            tracing::debug!(file = %file.display(), "opened through a redirect file");
        }
        None => printer.step(
            "keyway ui: open the link above in a browser on this machine (it works once); Ctrl-C ends it",
        ),
    }
    let served = ui.serve(listener, async move {
        let _ = stop.wait().await;
    });
    let result = served.await;
    if let Some(file) = opened {
        let _ = std::fs::remove_file(file);
    }
    result.context("serving the settings page")?;
    Ok(())
}

/// Open the page through a file only this user can read, which sends the browser on
/// to the link: the link's secret never appears in a process's arguments, where other
/// users of the machine could read it (`ps`). The file is removed once the page ends
/// or a minute has passed, whichever is first.
async fn open(home: &std::path::Path, port: u16, link: &str) -> Option<std::path::PathBuf> {
    let file = home.join(format!("ui-open-{port}.html"));
    let html = format!(
        "<!doctype html><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"0;url={link}\"><title>keyway</title><p>Opening <a href=\"{link}\">keyway's settings page</a>…</p>"
    );
    let written = (|| -> std::io::Result<()> {
        std::fs::create_dir_all(home)?;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut f = options.open(&file)?;
        f.write_all(html.as_bytes())
    })();
    if let Err(e) = written {
        tracing::info!(error = %e, "could not write the page's redirect file");
        return None;
    }
    let url = url::Url::from_file_path(&file).ok()?;
    if let Err(e) = keyway::auth::browser::open_system(&url).await {
        tracing::info!(error = %e, "could not open a browser");
        let _ = std::fs::remove_file(&file);
        return None;
    }
    let later = file.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(60)).await;
        let _ = std::fs::remove_file(later);
    });
    Some(file)
}
