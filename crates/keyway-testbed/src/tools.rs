//! The MCP server behind the bearer check: four small tools, served by rmcp.

use std::{sync::Arc, time::Duration};

use rmcp::{
    RoleServer, ServerHandler,
    handler::server::{router::tool::ToolRouter, wrapper::Parameters},
    model::ProgressNotificationParam,
    schemars,
    service::RequestContext,
    tool, tool_handler, tool_router,
};
use serde::Deserialize;

use crate::shared::ToolCounters;

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
    /// Cancelled and running `slow` calls.
    counters: Arc<ToolCounters>,
}

#[tool_router]
impl TestbedTools {
    pub(crate) fn new(counters: Arc<ToolCounters>) -> Self {
        Self {
            tool_router: Self::tool_router(),
            counters,
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

    #[tool(
        description = "Wait `ms` milliseconds, then answer. With a progress token, report progress at the start and half-way. Stops early when the call is cancelled."
    )]
    async fn slow(
        &self,
        Parameters(SlowArgs { ms }): Parameters<SlowArgs>,
        context: RequestContext<RoleServer>,
    ) -> String {
        let ms = ms.min(SLOW_MAX_MS);
        let _running = self.counters.slow_started();
        let progress = context.meta.get_progress_token();
        let total = ms as f64;
        for (step, wait) in [(0.0, ms / 2), (total / 2.0, ms - ms / 2)] {
            if let Some(token) = &progress {
                let note = ProgressNotificationParam::new(token.clone(), step).with_total(total);
                let _ = context.peer.notify_progress(note).await;
            }
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(wait)) => {}
                // notifications/cancelled for this call (rmcp cancels its token).
                () = context.ct.cancelled() => {
                    self.counters.cancelled.bump();
                    return "cancelled".to_owned();
                }
            }
        }
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
