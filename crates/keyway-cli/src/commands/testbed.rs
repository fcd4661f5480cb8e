//! `keyway testbed`: the test server in the foreground.

use std::io::Write;

use anyhow::Context;
use keyway_testbed::Testbed;

use crate::{cli::TestbedArgs, exit::CliError, printer::Printer};

pub async fn run(args: TestbedArgs, printer: &Printer) -> Result<(), CliError> {
    let _ = printer;
    // Listen for the stop signals before announcing readiness: a script may send
    // one as soon as it reads the line.
    let stop = super::testbed_signals::StopSignals::install()?;
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
