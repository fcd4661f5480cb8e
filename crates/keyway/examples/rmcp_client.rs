//! A client built on rmcp that reaches an authorized server through keyway: rmcp's
//! typed client runs over keyway's transport, which brings the token, refreshes it,
//! and authorizes (or steps up) when the server refuses, so rmcp never sees a 401.
//!
//! ```sh
//! cargo run -p keyway --example rmcp_client -- NAME_OR_URL
//! ```
//!
//! A name is a server saved with `keyway add`; a URL is authorized for this run only.

use std::process::ExitCode;

use keyway::client::{ClientError, Options, Session};
use rmcp::{
    ServiceExt,
    model::{ClientCapabilities, ClientConfig, Implementation},
};

/// Why the example stopped.
#[derive(Debug, thiserror::Error)]
enum Failed {
    #[error(transparent)]
    Keyway(#[from] ClientError),
    #[error("the MCP handshake failed: {0}")]
    Handshake(String),
    #[error("listing tools failed: {0}")]
    List(String),
}

/// Connect rmcp's client through keyway to `target` and list its tools.
async fn tool_names(target: &str, options: Options) -> Result<Vec<String>, Failed> {
    let session = Session::connect(target, options).await?;
    let transport = session.rmcp_transport().await?;
    let info = ClientConfig::new(
        ClientCapabilities::default(),
        Implementation::new("keyway-rmcp-example", env!("CARGO_PKG_VERSION")),
    );
    let client = info
        .serve(transport)
        .await
        .map_err(|e| Failed::Handshake(e.to_string()))?;
    let tools = client
        .list_all_tools()
        .await
        .map_err(|e| Failed::List(e.to_string()));
    if let Err(e) = client.cancel().await {
        eprintln!("closing the session: {e}");
    }
    session.close().await;
    Ok(tools?.into_iter().map(|t| t.name.to_string()).collect())
}

#[tokio::main]
async fn main() -> ExitCode {
    let Some(target) = std::env::args().nth(1) else {
        eprintln!("usage: rmcp_client NAME_OR_URL");
        return ExitCode::from(2);
    };
    match tool_names(&target, Options::default()).await {
        Ok(names) => {
            for n in names {
                println!("{n}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use keyway::auth::{AuthOptions, BrowserMode};
    use keyway_testbed::{Knobs, Testbed};

    use super::*;

    /// Against an OAuth testbed by URL: the first request is refused with 401, keyway
    /// authorizes underneath (following the redirects, no browser), and rmcp's client
    /// gets its tools as if nothing happened.
    #[tokio::test]
    async fn rmcp_lists_tools_through_an_authorization_it_never_sees() {
        let tb = Testbed::start(Knobs::default()).await.unwrap();
        let home = tempfile::tempdir().unwrap();
        let options = Options {
            auth: AuthOptions {
                browser: BrowserMode::Follow,
                ..AuthOptions::default()
            },
            home: home.path().to_owned(),
            use_keychain: false,
            ..Options::default()
        };
        let names = tool_names(tb.mcp_url(), options).await.unwrap();
        assert!(names.iter().any(|n| n == "echo"), "{names:?}");
        assert_eq!(tb.stats().authorizations, 1);
        assert!(tb.stats().unauthorized >= 1, "the server did refuse first");
    }
}
