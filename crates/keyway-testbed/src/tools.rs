//! The MCP server behind the bearer check: four small tools, served by rmcp.

use std::time::Duration;

use rmcp::{
    ServerHandler,
    handler::server::{router::tool::ToolRouter, wrapper::Parameters},
    schemars, tool, tool_handler, tool_router,
};
use serde::Deserialize;

/// Longest `slow` call, so a typo cannot hang a test for hours.
const SLOW_MAX_MS: u64 = 60_000;

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub(crate) struct EchoArgs {
    /// Text to send back.
    text: String,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub(crate) struct AddArgs {
    a: f64,
    b: f64,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub(crate) struct SlowArgs {
    /// How long to wait before answering, in milliseconds (at most 60000).
    ms: u64,
}

#[derive(Clone, Debug)]
pub(crate) struct TestbedTools {
    tool_router: ToolRouter<Self>,
}

#[tool_router]
impl TestbedTools {
    pub(crate) fn new() -> Self {
        Self {
            tool_router: Self::tool_router(),
        }
    }

    #[tool(description = "Return the text unchanged.")]
    async fn echo(&self, Parameters(args): Parameters<EchoArgs>) -> String {
        args.text
    }

    #[tool(description = "Add two numbers.")]
    async fn add(&self, Parameters(AddArgs { a, b }): Parameters<AddArgs>) -> String {
        let sum = a + b;
        if sum.fract() == 0.0 && sum.abs() < 1e15 {
            format!("{}", sum as i64)
        } else {
            sum.to_string()
        }
    }

    #[tool(description = "Wait `ms` milliseconds, then answer.")]
    async fn slow(&self, Parameters(SlowArgs { ms }): Parameters<SlowArgs>) -> String {
        let ms = ms.min(SLOW_MAX_MS);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        format!("waited {ms} ms")
    }

    #[tool(description = "Succeeds only with the step-up scope (mcp:admin by default).")]
    async fn admin_only(&self) -> String {
        "admin access granted".to_owned()
    }
}

#[tool_handler(
    router = self.tool_router,
    name = "keyway-testbed",
    instructions = "A test server for MCP clients: echo, add, slow, admin_only."
)]
impl ServerHandler for TestbedTools {}
