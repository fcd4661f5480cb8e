//! keyway: reach remote MCP servers that need authorization.
//!
//! The library behind the `keyway` command, for any Rust program that talks to MCP
//! servers behind OAuth 2.1 or static tokens.
//!
//! Start at [`client::Session`]: connect to a server saved with `keyway add` (by
//! name) or to a URL, and list and call tools, read resources and get prompts. The
//! session brings the token, refreshes it once across every process, and authorizes
//! (browser, device or headless) or steps up when the server asks. Programs built on
//! rmcp take [`client::Session::rmcp_transport`] as their transport instead.
//!
//! ```no_run
//! # async fn demo() -> Result<(), keyway::client::ClientError> {
//! use keyway::client::{Options, Session};
//!
//! let session = Session::connect("https://mcp.example.com/mcp", Options::default()).await?;
//! let tools = session.list_tools().await?;
//! println!("{} tools", tools.len());
//! session.close().await;
//! # Ok(()) }
//! ```
//!
//! Underneath, by layer:
//! - [`client`]: the session policy (refresh, authorize, step up, the caps, the
//!   cross-process lease) and the authorized session.
//! - [`mcp`]: the one MCP client transport ([`mcp::wire::Wire`]: Streamable HTTP and
//!   legacy HTTP+SSE, raw JSON-RPC text) and rmcp's typed client on it
//!   ([`mcp::Connection`]).
//! - [`auth`]: discovery (RFC 9728, RFC 8414, OpenID), registration (pre-registered,
//!   client ID metadata documents, RFC 7591), PKCE flows, tokens and their binding.
//! - [`store`]: servers and credentials in an encrypted SQLite store, bound to issuer
//!   and resource, refreshed once across processes.
//! - [`http`]: the HTTP client every request goes through (HTTP/2 by ALPN, deadlines,
//!   proxies, the address guard for authorization requests).
//! - [`bridge`], [`gateway`]: `keyway proxy` and `keyway serve`.
//! - [`probe`]: what it takes to get into a server, and what is wrong.
//! - [`manage`]: saved servers as a person manages them (add, authorize, cards,
//!   tokens, remove), for `keyway` commands and the settings page alike.
//!
//! Secrets are [`Secret`]s: redacted in `Debug` and `Display`, zeroed when dropped.

#![warn(missing_docs)]

pub mod auth;
pub mod bridge;
pub mod client;
#[doc(hidden)]
pub mod fuzz;
pub mod gateway;
pub mod http;
pub mod json;
pub mod manage;
pub mod mcp;
pub mod merge;
pub mod naming;
pub mod probe;
pub mod process;
mod secret;
pub mod status;
pub mod stdio;
pub mod store;
mod text;
pub mod web;

pub use secret::Secret;
