//! `keyway testbed`: the test server in the foreground.

use std::io::Write;

use anyhow::Context;
use keyway_testbed::Testbed;

use crate::{cli::TestbedArgs, exit::CliError, printer::Printer};

pub async fn run(args: TestbedArgs, printer: &Printer) -> Result<(), CliError> {
    let _ = printer;
    // Listen for the stop signals before announcing readiness: a script may send
    // one as soon as it reads the line.
    let stop = StopSignals::install()?;
    let testbed = Testbed::start(args.knobs)
        .await
        .map_err(|e| CliError::failure(e).with_hint("pick another --port, or 0 for a free one"))?;
    // The one line scripts wait for: readiness, with every address they need.
    {
        let mut out = std::io::stdout().lock();
        serde_json::to_writer(&mut out, &testbed.announcement()).context("writing to stdout")?;
        writeln!(out).context("writing to stdout")?;
        out.flush().context("writing to stdout")?;
    }
    tracing::info!(
        mcp_url = testbed.mcp_url(),
        issuer = testbed.issuer(),
        "testbed listening"
    );
    stop.wait().await?;
    testbed.shutdown().await;
    Ok(())
}

/// Ctrl-C, or SIGTERM where there is one.
struct StopSignals {
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn install() -> Result<Self, CliError> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Self {
                int: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
                term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
            })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    async fn wait(mut self) -> Result<(), CliError> {
        #[cfg(unix)]
        tokio::select! {
            _ = self.int.recv() => {}
            _ = self.term.recv() => {}
        }
        #[cfg(not(unix))]
        tokio::signal::ctrl_c()
            .await
            .context("waiting for Ctrl-C")?;
        Ok(())
    }
}
