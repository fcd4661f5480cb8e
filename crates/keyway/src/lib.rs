//! keyway: reach remote MCP servers that need authorization.
//!
//! The library behind the `keyway` command: connections to MCP servers over
//! Streamable HTTP with the token injected per request ([`mcp`]), secrets that cannot
//! leak through logs ([`Secret`]), and the HTTP client policy ([`http`]). The
//! authorization flow, the encrypted store, the bridge and the gateway grow here.

pub mod auth;
pub mod bridge;
pub mod client;
pub mod gateway;
pub mod http;
pub mod mcp;
pub mod merge;
pub mod naming;
pub mod probe;
pub mod process;
mod secret;
pub mod status;
pub mod stdio;
pub mod store;

pub use secret::Secret;
