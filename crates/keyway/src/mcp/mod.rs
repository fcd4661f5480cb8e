//! Connections to MCP servers.
//!
//! [`Connection::open`] runs the MCP handshake with the token from a [`TokenSource`];
//! a server that wants authorization answers with a [`ConnectError`] that says so and
//! carries its challenge. Everything goes through keyway's one transport,
//! [`wire::Wire`]: the typed client here puts rmcp on top of it.

mod bearer;
mod error;
mod message;
pub mod modern;
pub(crate) mod sse;
/// The largest single message keyway reads or accepts (an answer, an event, a
/// request to the gateway).
pub const MAX_MESSAGE: usize = sse::MAX_EVENT;
pub mod wire;

use std::sync::Arc;

use rmcp::{
    RoleClient, ServiceExt,
    model::{
        CallToolRequestParams, CallToolResult, ClientCapabilities, ClientConfig,
        GetPromptRequestParams, GetPromptResult, Implementation, JsonObject, Prompt,
        ProtocolVersion, ReadResourceRequestParams, ReadResourceResult, Resource, Tool,
    },
    service::RunningService,
};

pub use bearer::{Presented, StaticToken, TokenSource};
pub use error::{ConnectError, RequestError};
pub use wire::{Deadlines, Protocol, UnknownProtocol, WireConfig, WireKind};

/// The protocol revision keyway offers in `initialize`. Servers answer with their own;
/// 2025-11-25 is the newest revision with the classic handshake, which every server
/// since 2025-03-26 understands.
pub const PROTOCOL_VERSION: ProtocolVersion = ProtocolVersion::V_2025_11_25;

/// How long closing a session may take before keyway gives up.
const CLOSE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Which transport a connection uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum TransportChoice {
    /// Streamable HTTP (MCP "Transports", 2025-03-26 and later); the default.
    #[default]
    StreamableHttp,
    /// The legacy HTTP+SSE transport of the 2024-11-05 revision.
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
    /// `serverInfo.name` from the `initialize` result, if given.
    pub name: Option<String>,
    /// `serverInfo.version` from the `initialize` result, if given.
    pub version: Option<String>,
    /// The protocol revision the server chose (`protocolVersion`); empty if unknown.
    pub protocol_version: String,
}

/// An open MCP session.
#[derive(Debug)]
pub struct Connection {
    url: String,
    service: RunningService<RoleClient, ClientConfig>,
    transport: TransportChoice,
    /// The wire under `service` (what it learned of the server's tools).
    wire: wire::Wire,
}

impl Connection {
    /// Connect to `url` over Streamable HTTP and run the handshake, with tokens from
    /// `tokens`.
    ///
    /// Fails with [`ConnectError::AuthorizationRequired`] on a 401 (its challenge says
    /// what the server takes), [`ConnectError::InsufficientScope`] on a 403
    /// `insufficient_scope`, [`ConnectError::Unreachable`] when nothing answers,
    /// [`ConnectError::InvalidUrl`] for a URL that is not http(s), and
    /// [`ConnectError::Failed`] otherwise.
    ///
    /// ```no_run
    /// use std::sync::Arc;
    ///
    /// use keyway::{
    ///     Secret,
    ///     mcp::{Connection, StaticToken},
    /// };
    ///
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// let http = keyway::http::WireClient::new(&Default::default())?;
    /// let token = Arc::new(StaticToken::new(Some(Secret::new("tok-123"))));
    /// let conn = Connection::open("https://mcp.example.com/mcp", http, token).await?;
    /// println!("{:?} speaks {}", conn.server().name, conn.server().protocol_version);
    /// for tool in conn.list_tools().await? {
    ///     println!("{}", tool.name);
    /// }
    /// conn.close().await;
    /// # Ok(()) }
    /// ```
    pub async fn open(
        url: &str,
        http: crate::http::WireClient,
        tokens: Arc<dyn TokenSource>,
    ) -> Result<Self, ConnectError> {
        Self::open_with(url, http, tokens, Vec::new()).await
    }

    /// [`Connection::open`] with extra headers on every request (API keys). Their
    /// values are secrets: marked sensitive, never in a config that derives `Debug`.
    pub async fn open_with(
        url: &str,
        http: crate::http::WireClient,
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
        http: crate::http::WireClient,
        tokens: Arc<dyn TokenSource>,
        headers: Vec<(http::HeaderName, crate::Secret)>,
        choice: TransportChoice,
    ) -> Result<Self, ConnectError> {
        let parsed = parse_url(url)?;
        let mut config = WireConfig::new(parsed, http, tokens);
        config.headers = headers;
        Self::connect(config, choice).await
    }

    /// Connect with a whole [`WireConfig`] (deadlines included); its `kind` is
    /// replaced by what `choice` says.
    pub async fn connect(
        mut config: WireConfig,
        choice: TransportChoice,
    ) -> Result<Self, ConnectError> {
        parse_url(config.url.as_str())?;
        match choice {
            TransportChoice::StreamableHttp | TransportChoice::LegacySse => {
                config.kind = match choice {
                    TransportChoice::LegacySse => WireKind::LegacySse,
                    _ => WireKind::StreamableHttp,
                };
                Self::handshake(config).await
            }
            TransportChoice::Auto => {
                config.kind = WireKind::StreamableHttp;
                match Self::handshake(config.clone()).await {
                    Err(ConnectError::Failed {
                        status: Some(400 | 404 | 405),
                        ..
                    }) => {
                        tracing::info!(
                            url = %config.url,
                            "Streamable HTTP refused; trying the legacy HTTP+SSE transport"
                        );
                        config.kind = WireKind::LegacySse;
                        Self::handshake(config).await
                    }
                    other => other,
                }
            }
        }
    }

    /// Start the session the way `config.protocol` says. `Auto` on Streamable HTTP
    /// asks `server/discover` first (MCP 2026-07-28 "Backward Compatibility"): a
    /// modern server answers it and needs no handshake; a legacy one refuses it
    /// without a modern error, and gets the `initialize` handshake on the same wire.
    /// A server that knows 2026-07-28 but names only handshake revisions as supported
    /// gets the handshake on a new wire. One that spoke a handshake revision last
    /// time (`config.last_protocol`) gets `initialize` at once, and is asked only when
    /// that fails for another reason than authorization or reachability.
    async fn handshake(config: WireConfig) -> Result<Self, ConnectError> {
        use rmcp::service::{ClientInitializeError, ClientLifecycleMode, ClientServiceExt};
        let url = config.url.to_string();
        let remembered_handshake = config.protocol == Protocol::Auto
            && config.kind == WireKind::StreamableHttp
            && config
                .last_protocol
                .as_deref()
                .is_some_and(|v| !modern::is_modern(v));
        if remembered_handshake {
            let (w, inbound) = wire::Wire::connect(config.clone())
                .await
                .map_err(|e| ConnectError::from_wire(&url, e))?;
            match client_info()
                .serve(wire::WireTransport::new(w.clone(), inbound))
                .await
                .map_err(|e| ConnectError::from_initialize(&url, e))
            {
                Ok(service) => {
                    return Ok(Self {
                        url,
                        service,
                        transport: TransportChoice::StreamableHttp,
                        wire: w,
                    });
                }
                Err(e @ ConnectError::Failed { .. }) => {
                    tracing::info!(
                        %url,
                        error = %e,
                        "the handshake that worked last time failed; asking what the server speaks"
                    );
                }
                Err(e) => return Err(e),
            }
        }
        let transport = match config.kind {
            WireKind::StreamableHttp => TransportChoice::StreamableHttp,
            WireKind::LegacySse => TransportChoice::LegacySse,
        };
        let legacy = |v: &str| {
            let mut info = client_info();
            info.protocol_version =
                serde_json::from_value(serde_json::Value::from(v)).unwrap_or(PROTOCOL_VERSION);
            (info, ClientLifecycleMode::Initialize)
        };
        let modern = ProtocolVersion::V_2026_07_28;
        let (info, mode) = match (&config.protocol, config.kind) {
            (_, WireKind::LegacySse) => legacy("2024-11-05"),
            (Protocol::Auto, _) => (
                client_info(),
                ClientLifecycleMode::Auto {
                    preferred_versions: vec![modern],
                    legacy_version: Some(PROTOCOL_VERSION),
                },
            ),
            (Protocol::Exactly(v), _) if modern::is_modern(v) => (
                client_info(),
                ClientLifecycleMode::Discover {
                    preferred_versions: vec![modern],
                },
            ),
            (Protocol::Exactly(v), _) => legacy(v),
        };
        let auto = matches!(mode, ClientLifecycleMode::Auto { .. });
        let (mut w, inbound) = wire::Wire::connect(config.clone())
            .await
            .map_err(|e| ConnectError::from_wire(&url, e))?;
        let started = info
            .serve_with_lifecycle(wire::WireTransport::new(w.clone(), inbound), mode)
            .await;
        let service = match started {
            Err(ClientInitializeError::NoCompatibleProtocolVersion {
                server_supported, ..
            }) if auto && server_supported.iter().any(|v| v.has_initialize()) => {
                tracing::debug!(%url, "the server names only handshake revisions; initializing");
                let inbound;
                (w, inbound) = wire::Wire::connect(config)
                    .await
                    .map_err(|e| ConnectError::from_wire(&url, e))?;
                client_info()
                    .serve(wire::WireTransport::new(w.clone(), inbound))
                    .await
            }
            other => other,
        }
        .map_err(|e| ConnectError::from_initialize(&url, e))?;
        Ok(Self {
            url,
            service,
            transport,
            wire: w,
        })
    }

    /// Whether the connection speaks 2026-07-28 (per-request metadata, no session).
    pub fn is_modern(&self) -> bool {
        self.service
            .peer_info()
            .is_some_and(|p| !p.protocol_version.has_initialize())
    }

    /// The server's URL.
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

    /// What the server said it offers in the handshake (`tools`, `prompts`,
    /// `resources`...); `None` before one.
    pub fn capabilities(&self) -> Option<rmcp::model::ServerCapabilities> {
        self.service.peer_info().map(|p| p.capabilities.clone())
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
        if self.is_modern() {
            // A call carries its tool's `x-mcp-header` values as headers (MCP
            // 2026-07-28): they are known from the tool's definition.
            if !self.wire.tools_known(name).0 {
                self.list_tools().await?;
            }
            if let (_, Some(reason)) = self.wire.tools_known(name) {
                return Err(RequestError::InvalidTool {
                    tool: name.to_owned(),
                    reason,
                });
            }
        }
        let mut params = CallToolRequestParams::new(name.to_owned());
        if let Some(args) = arguments {
            params = params.with_arguments(args);
        }
        self.service
            .call_tool(params)
            .await
            .map_err(|e| RequestError::from_service(&self.url, e))
    }

    /// Every resource the server offers (all pages).
    pub async fn list_resources(&self) -> Result<Vec<Resource>, RequestError> {
        self.service
            .list_all_resources()
            .await
            .map_err(|e| RequestError::from_service(&self.url, e))
    }

    /// Read one resource.
    pub async fn read_resource(&self, uri: &str) -> Result<ReadResourceResult, RequestError> {
        self.service
            .read_resource(ReadResourceRequestParams::new(uri))
            .await
            .map_err(|e| RequestError::from_service(&self.url, e))
    }

    /// Every prompt the server offers (all pages).
    pub async fn list_prompts(&self) -> Result<Vec<Prompt>, RequestError> {
        self.service
            .list_all_prompts()
            .await
            .map_err(|e| RequestError::from_service(&self.url, e))
    }

    /// Get one prompt, with its arguments.
    pub async fn get_prompt(
        &self,
        name: &str,
        arguments: Option<JsonObject>,
    ) -> Result<GetPromptResult, RequestError> {
        let mut params = GetPromptRequestParams::new(name);
        if let Some(args) = arguments {
            params = params.with_arguments(args);
        }
        self.service
            .get_prompt(params)
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

fn parse_url(url: &str) -> Result<url::Url, ConnectError> {
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
    Ok(parsed)
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
