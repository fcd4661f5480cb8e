//! The one HTTP client keyway builds: rustls, bounded timeouts, no redirects followed
//! by default (an MCP endpoint that redirects is reported, not silently followed with
//! a token attached), and a recognizable user agent.

use std::time::Duration;

/// Connection timeout for every request.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The `User-Agent` keyway sends.
pub const USER_AGENT: &str = concat!("keyway/", env!("CARGO_PKG_VERSION"));

/// Build keyway's HTTP client for MCP traffic.
pub fn client() -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .user_agent(USER_AGENT)
        .connect_timeout(CONNECT_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .tcp_nodelay(true)
        .pool_idle_timeout(Duration::from_secs(90))
        .build()
}
