//! The MCP server behind the bearer check: small tools, served by rmcp. `echo`, `add`,
//! `slow` and `admin_only` answer at once; `ask_name`, `sample`, `list_roots` and
//! `two_rounds` need the client's answers first (see [`crate::interactive`]).

use std::{sync::Arc, time::Duration};

use rmcp::{
    RoleServer, ServerHandler,
    handler::server::{
        router::tool::ToolRouter,
        tool::{InputResponses, RequestState},
        wrapper::Parameters,
    },
    model::ProgressNotificationParam,
    schemars,
    service::RequestContext,
    tool, tool_handler, tool_router,
};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use rmcp::model::ProtocolVersion;

use crate::{
    interactive::{self, Round, Rounds},
    knobs::McpRevision,
    shared::ToolCounters,
};

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
    /// The MCP generations served.
    revision: McpRevision,
    /// What the interactive tools remember between rounds (shared by every session:
    /// a 2026-07-28 retry may reach another instance).
    rounds: Arc<Rounds>,
    /// This session's resource subscriptions (handshake revisions), by URI: each
    /// stops its relay of updates when cancelled.
    subscriptions: Arc<std::sync::Mutex<std::collections::HashMap<String, CancellationToken>>>,
}

#[tool_router]
impl TestbedTools {
    pub(crate) fn new(
        counters: Arc<ToolCounters>,
        revision: McpRevision,
        rounds: Arc<Rounds>,
    ) -> Self {
        Self {
            tool_router: Self::tool_router(),
            counters,
            revision,
            rounds,
            subscriptions: Arc::default(),
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

    #[tool(
        description = "Mark the resource testbed://readme as changed: its subscribers hear notifications/resources/updated."
    )]
    async fn touch(&self) -> String {
        let heard = self.rounds.updates.send(README_URI.to_owned()).unwrap_or(0);
        format!("touched {README_URI} ({heard} subscribers)")
    }

    #[tool(description = "Ask the person's name (an elicitation), then greet them.")]
    async fn ask_name(
        &self,
        InputResponses(responses): InputResponses,
        RequestState(state): RequestState,
        context: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::CallToolResponse, rmcp::ErrorData> {
        let stages = [("name", interactive::elicit_name())];
        match self
            .rounds
            .ask("ask_name", &stages, responses, state, &context)
            .await
        {
            Round::Answered(a) => Ok(text(interactive::elicited_name(a.get("name")))),
            Round::Respond(r) => r,
        }
    }

    #[tool(description = "Ask the client's model for a haiku (a sampling request).")]
    async fn sample(
        &self,
        InputResponses(responses): InputResponses,
        RequestState(state): RequestState,
        context: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::CallToolResponse, rmcp::ErrorData> {
        let stages = [("haiku", interactive::sample("Write a haiku about keys."))];
        match self
            .rounds
            .ask("sample", &stages, responses, state, &context)
            .await
        {
            Round::Answered(a) => Ok(text(interactive::sampled_text(a.get("haiku")))),
            Round::Respond(r) => r,
        }
    }

    #[tool(description = "List the client's roots.")]
    async fn list_roots(
        &self,
        InputResponses(responses): InputResponses,
        RequestState(state): RequestState,
        context: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::CallToolResponse, rmcp::ErrorData> {
        let stages = [("roots", interactive::roots())];
        match self
            .rounds
            .ask("list_roots", &stages, responses, state, &context)
            .await
        {
            Round::Answered(a) => Ok(text(interactive::listed_roots(a.get("roots")))),
            Round::Respond(r) => r,
        }
    }

    #[tool(
        description = "Two rounds: ask the person's name (an elicitation), then the client's model (sampling)."
    )]
    async fn two_rounds(
        &self,
        InputResponses(responses): InputResponses,
        RequestState(state): RequestState,
        context: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::CallToolResponse, rmcp::ErrorData> {
        let stages = [
            ("name", interactive::elicit_name()),
            ("greeting", interactive::sample("Greet the person warmly.")),
        ];
        match self
            .rounds
            .ask("two_rounds", &stages, responses, state, &context)
            .await
        {
            Round::Answered(a) => Ok(text(format!(
                "{}; {}",
                interactive::elicited_name(a.get("name")),
                interactive::sampled_text(a.get("greeting"))
            ))),
            Round::Respond(r) => r,
        }
    }
}

/// A tool's complete answer: one text block.
fn text(t: String) -> rmcp::model::CallToolResponse {
    rmcp::model::CallToolResult::success(vec![rmcp::model::ContentBlock::text(t)]).into()
}

/// The protocol versions a server of `revision` speaks.
pub(crate) fn supported_versions(
    revision: McpRevision,
) -> std::borrow::Cow<'static, [ProtocolVersion]> {
    const MODERN: &[ProtocolVersion] = &[ProtocolVersion::V_2026_07_28];
    match revision {
        McpRevision::Both => std::borrow::Cow::Borrowed(ProtocolVersion::KNOWN_VERSIONS),
        McpRevision::Modern => std::borrow::Cow::Borrowed(MODERN),
        McpRevision::Legacy => {
            std::borrow::Cow::Borrowed(ProtocolVersion::known_up_to(&ProtocolVersion::V_2025_11_25))
        }
    }
}

/// The one resource, so clients can list and read one.
const README_URI: &str = "testbed://readme";

#[tool_handler(router = self.tool_router)]
impl ServerHandler for TestbedTools {
    fn supported_protocol_versions(&self) -> std::borrow::Cow<'static, [ProtocolVersion]> {
        supported_versions(self.revision)
    }

    fn get_info(&self) -> rmcp::model::ServerConfig {
        rmcp::model::ServerConfig::new(
            rmcp::model::ServerCapabilities::builder()
                .enable_tools()
                .enable_prompts()
                .enable_resources()
                .enable_resources_subscribe()
                .build(),
        )
        .with_server_info(rmcp::model::Implementation::new(
            "keyway-testbed",
            env!("CARGO_PKG_VERSION"),
        ))
        .with_instructions(
            "A test server for MCP clients: echo, add, slow, admin_only, touch, and ask_name, sample, list_roots, two_rounds (which need the client's answers); the prompt greet; the resource testbed://readme."
                .to_string(),
        )
    }

    fn accepted_subscription_filter(
        &self,
        requested: &rmcp::model::SubscriptionFilter,
    ) -> Option<rmcp::model::SubscriptionFilter> {
        // Resource updates only: the testbed's lists never change.
        let mut accepted = rmcp::model::SubscriptionFilter::new();
        accepted.resource_subscriptions = requested.resource_subscriptions.clone();
        Some(accepted)
    }

    async fn listen(
        &self,
        context: rmcp::service::SubscriptionContext,
    ) -> Result<(), rmcp::ErrorData> {
        let mut updates = self.rounds.updates.subscribe();
        let wanted = context
            .accepted()
            .resource_subscriptions
            .clone()
            .unwrap_or_default();
        loop {
            tokio::select! {
                () = context.cancelled() => return Ok(()),
                uri = updates.recv() => match uri {
                    Ok(uri) if wanted.contains(&uri) => {
                        let note = rmcp::model::ServerNotification::ResourceUpdatedNotification(
                            rmcp::model::ResourceUpdatedNotification::new(
                                rmcp::model::ResourceUpdatedNotificationParam::new(uri),
                            ),
                        );
                        if context.sink().send(note).await.is_err() {
                            return Ok(());
                        }
                    }
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return Ok(()),
                },
            }
        }
    }

    #[allow(deprecated)] // resources/subscribe: how the handshake revisions subscribe.
    async fn subscribe(
        &self,
        request: rmcp::model::SubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), rmcp::ErrorData> {
        self.counters.subscribes.bump();
        let mut updates = self.rounds.updates.subscribe();
        let peer = context.peer.clone();
        let uri = request.uri;
        let stop = CancellationToken::new();
        if let Some(old) = self
            .subscriptions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(uri.clone(), stop.clone())
        {
            old.cancel();
        }
        tokio::spawn(async move {
            loop {
                let changed = tokio::select! {
                    () = stop.cancelled() => return,
                    changed = updates.recv() => changed,
                };
                let Ok(changed) = changed else { return };
                if changed == uri
                    && peer
                        .notify_resource_updated(
                            rmcp::model::ResourceUpdatedNotificationParam::new(changed),
                        )
                        .await
                        .is_err()
                {
                    return;
                }
            }
        });
        Ok(())
    }

    #[allow(deprecated)] // resources/unsubscribe: the handshake revisions' end of one.
    async fn unsubscribe(
        &self,
        request: rmcp::model::UnsubscribeRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), rmcp::ErrorData> {
        self.counters.unsubscribes.bump();
        if let Some(stop) = self
            .subscriptions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&request.uri)
        {
            stop.cancel();
        }
        Ok(())
    }

    async fn list_prompts(
        &self,
        _request: Option<rmcp::model::PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::ListPromptsResult, rmcp::ErrorData> {
        Ok(rmcp::model::ListPromptsResult::with_all_items(vec![
            rmcp::model::Prompt::new(
                "greet",
                Some("A greeting for someone."),
                Some(vec![rmcp::model::PromptArgument::new("name")]),
            ),
        ]))
    }

    async fn get_prompt(
        &self,
        request: rmcp::model::GetPromptRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::GetPromptResponse, rmcp::ErrorData> {
        if request.name != "greet" {
            return Err(rmcp::ErrorData::invalid_params("no such prompt", None));
        }
        let name = request
            .arguments
            .as_ref()
            .and_then(|a| a.get("name"))
            .and_then(|v| v.as_str())
            .unwrap_or("there")
            .to_owned();
        Ok(
            rmcp::model::GetPromptResult::new(vec![rmcp::model::PromptMessage::new_text(
                rmcp::model::Role::User,
                format!("Say hello to {name}."),
            )])
            .into(),
        )
    }

    async fn list_resources(
        &self,
        _request: Option<rmcp::model::PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::ListResourcesResult, rmcp::ErrorData> {
        Ok(rmcp::model::ListResourcesResult::with_all_items(vec![
            rmcp::model::Resource::new(README_URI, "readme")
                .with_description("What the testbed is."),
        ]))
    }

    async fn read_resource(
        &self,
        request: rmcp::model::ReadResourceRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::ReadResourceResponse, rmcp::ErrorData> {
        if request.uri != README_URI {
            return Err(rmcp::ErrorData::resource_not_found(
                "no such resource",
                None,
            ));
        }
        Ok(
            rmcp::model::ReadResourceResult::new(vec![rmcp::model::ResourceContents::text(
                "keyway's testbed: an OAuth 2.1 authorization server and an MCP server.",
                README_URI,
            )])
            .into(),
        )
    }
}
