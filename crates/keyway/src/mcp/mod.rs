//! Connections to MCP servers over Streamable HTTP.
//!
//! [`Connection::open`] runs the MCP handshake with the token from a [`TokenSource`];
//! a server that wants authorization answers with a [`ConnectError`] that says so and
//! carries its challenge.

mod bearer;
mod error;
mod h1;
mod message;
mod post;
mod sse;
pub(crate) use post::Reply;
/// The largest single message keyway reads or accepts (an answer, an event, a
/// request to the gateway).
pub const MAX_MESSAGE: usize = sse::MAX_EVENT;
pub mod wire;

use std::{sync::Arc, time::Duration};

use rmcp::{
    RoleClient, ServiceExt,
    model::{
        CallToolRequestParams, CallToolResult, ClientCapabilities, ClientConfig, Implementation,
        JsonObject, ProtocolVersion, Tool,
    },
    service::RunningService,
    transport::{
        StreamableHttpClientTransport, streamable_http_client::StreamableHttpClientTransportConfig,
    },
};

pub use bearer::{StaticToken, TokenSource};
pub use error::{ConnectError, RequestError};

use bearer::BearerHttp;

/// The protocol revision keyway offers in `initialize`. Servers answer with their own;
/// 2025-11-25 is the newest revision with the classic handshake, which every server
/// since 2025-03-26 understands.
pub const PROTOCOL_VERSION: ProtocolVersion = ProtocolVersion::V_2025_11_25;

/// How long closing a session may take before keyway gives up on the `DELETE`.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Which transport a connection uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum TransportChoice {
    #[default]
    StreamableHttp,
    LegacySse,
    /// Streamable HTTP, falling back to legacy SSE.
    Auto,
}

fn client_info() -> ClientConfig {
    ClientConfig::new(
        ClientCapabilities::default(),
        Implementation::new("keyway", env!("CARGO_PKG_VERSION")),
    )
    .with_protocol_version(PROTOCOL_VERSION)
}

/// What the server said about itself in the handshake.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerSummary {
    pub name: Option<String>,
    pub version: Option<String>,
    pub protocol_version: String,
}

/// An open MCP session.
#[derive(Debug)]
pub struct Connection {
    url: String,
    service: RunningService<RoleClient, ClientConfig>,
    transport: TransportChoice,
}

impl Connection {
    /// Connect to `url` and run the handshake, with tokens from `tokens`.
    pub async fn open(
        url: &str,
        http: reqwest::Client,
        tokens: Arc<dyn TokenSource>,
    ) -> Result<Self, ConnectError> {
        Self::open_with(url, http, tokens, Vec::new()).await
    }

    /// [`Connection::open`] with extra headers on every request (API keys). Their
    /// values are secrets: marked sensitive, never in a config that derives `Debug`.
    pub async fn open_with(
        url: &str,
        http: reqwest::Client,
        tokens: Arc<dyn TokenSource>,
        headers: Vec<(http::HeaderName, crate::Secret)>,
    ) -> Result<Self, ConnectError> {
        Self::open_transport(url, http, tokens, headers, TransportChoice::StreamableHttp).await
    }

    /// Connect over the chosen transport. `Auto` tries Streamable HTTP and falls back
    /// to the legacy HTTP+SSE transport when the `initialize` POST is refused with 400,
    /// 404 or 405 (MCP "Backwards Compatibility").
    pub async fn open_transport(
        url: &str,
        http: reqwest::Client,
        tokens: Arc<dyn TokenSource>,
        headers: Vec<(http::HeaderName, crate::Secret)>,
        choice: TransportChoice,
    ) -> Result<Self, ConnectError> {
        let parsed = url::Url::parse(url).map_err(|e| ConnectError::InvalidUrl {
            url: url.to_owned(),
            reason: e.to_string(),
        })?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(ConnectError::InvalidUrl {
                url: url.to_owned(),
                reason: "the scheme must be http or https".into(),
            });
        }
        match choice {
            TransportChoice::StreamableHttp => Self::streamable(url, http, tokens, headers).await,
            TransportChoice::LegacySse => Self::legacy(parsed, http, tokens, headers).await,
            TransportChoice::Auto => {
                match Self::streamable(url, http.clone(), tokens.clone(), headers.clone()).await {
                    Err(ConnectError::Failed { reason, .. }) if error::refused_post(&reason) => {
                        tracing::info!(
                            url,
                            "Streamable HTTP refused; trying the legacy HTTP+SSE transport"
                        );
                        Self::legacy(parsed, http, tokens, headers).await
                    }
                    other => other,
                }
            }
        }
    }

    async fn streamable(
        url: &str,
        http: reqwest::Client,
        tokens: Arc<dyn TokenSource>,
        headers: Vec<(http::HeaderName, crate::Secret)>,
    ) -> Result<Self, ConnectError> {
        let client = BearerHttp::new(http, tokens, headers);
        let transport = StreamableHttpClientTransport::with_client(
            client,
            StreamableHttpClientTransportConfig::with_uri(url),
        );
        let service = client_info()
            .serve(transport)
            .await
            .map_err(|e| ConnectError::from_initialize(url, e))?;
        Ok(Self {
            url: url.to_owned(),
            service,
            transport: TransportChoice::StreamableHttp,
        })
    }

    async fn legacy(
        url: url::Url,
        http: reqwest::Client,
        tokens: Arc<dyn TokenSource>,
        headers: Vec<(http::HeaderName, crate::Secret)>,
    ) -> Result<Self, ConnectError> {
        let config = wire::WireConfig {
            url: url.clone(),
            http,
            tokens,
            headers,
            kind: wire::WireKind::LegacySse,
        };
        let (w, inbound) = wire::Wire::connect(config)
            .await
            .map_err(|e| ConnectError::from_wire(url.as_str(), e))?;
        let transport = wire::WireTransport::new(w, inbound);
        let service = client_info()
            .serve(transport)
            .await
            .map_err(|e| ConnectError::from_initialize(url.as_str(), e))?;
        Ok(Self {
            url: url.to_string(),
            service,
            transport: TransportChoice::LegacySse,
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// The transport in use (never `Auto`).
    pub fn transport(&self) -> TransportChoice {
        self.transport
    }

    /// The server's name, version and the protocol revision it chose.
    pub fn server(&self) -> ServerSummary {
        let peer = self.service.peer_info();
        ServerSummary {
            name: peer
                .as_ref()
                .and_then(|p| p.server_info.as_ref())
                .map(|i| i.name.clone()),
            version: peer
                .as_ref()
                .and_then(|p| p.server_info.as_ref())
                .map(|i| i.version.clone()),
            protocol_version: peer
                .as_ref()
                .map(|p| p.protocol_version.to_string())
                .unwrap_or_default(),
        }
    }

    /// Every tool the server offers (all pages).
    pub async fn list_tools(&self) -> Result<Vec<Tool>, RequestError> {
        self.service
            .list_all_tools()
            .await
            .map_err(|e| RequestError::from_service(&self.url, e))
    }

    /// Call one tool.
    pub async fn call_tool(
        &self,
        name: &str,
        arguments: Option<JsonObject>,
    ) -> Result<CallToolResult, RequestError> {
        let mut params = CallToolRequestParams::new(name.to_owned());
        if let Some(args) = arguments {
            params = params.with_arguments(args);
        }
        self.service
            .call_tool(params)
            .await
            .map_err(|e| RequestError::from_service(&self.url, e))
    }

    /// End the session (the server gets a `DELETE` for it).
    pub async fn close(mut self) {
        if let Err(e) = self.service.close_with_timeout(CLOSE_TIMEOUT).await {
            tracing::debug!(url = %self.url, error = %e, "closing the MCP session failed");
        }
    }
}

/// The text parts of a tool result, joined by newlines.
pub fn result_text(result: &CallToolResult) -> String {
    result
        .content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.as_str()))
        .collect::<Vec<_>>()
        .join("\n")
}
