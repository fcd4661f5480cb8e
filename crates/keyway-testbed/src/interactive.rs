//! Tools that need something from the client while they run: an elicitation, a
//! sampling request, the client's roots, and two rounds of them.
//!
//! A client speaking MCP 2026-07-28 gets them as multi round-trip requests: the call
//! is answered `input_required` with `inputRequests` and a `requestState`, and
//! completes when it is retried with the `inputResponses`. A client of a handshake
//! revision gets the same questions as the server's own requests on the call's
//! stream, as those revisions do. Either way the tool's answer is the same text, so a
//! test can compare the two generations (and a bridge between them).
//!
//! `requestState` is a handle to what the server remembers between rounds: a state
//! the server did not issue (tampered with, replayed after completion, from another
//! tool) is refused with -32602.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    sync::Mutex,
};

use rmcp::{
    RoleServer,
    model::{
        CallToolResponse, CallToolResult, ContentBlock, InputRequest, InputRequiredResult,
        ServerRequest,
    },
    service::RequestContext,
};
use serde_json::{Value, json};

/// States remembered at most; the oldest is forgotten first.
const STATES_KEPT: usize = 1024;

/// What the server remembers between the rounds of its interactive tools, and the
/// resource changes its subscribers hear of (every session shares one).
#[derive(Debug)]
pub(crate) struct Rounds {
    states: Mutex<States>,
    /// URIs of resources `touch` changed, for every subscriber.
    pub(crate) updates: tokio::sync::broadcast::Sender<String>,
    /// Pad every `requestState` to this many bytes (0: no padding).
    pub(crate) state_bytes: usize,
    /// Never complete: every round asks again.
    pub(crate) forever: bool,
}

#[derive(Debug, Default)]
struct States {
    by_handle: HashMap<String, Remembered>,
    order: VecDeque<String>,
}

/// One issued `requestState`: the tool it is for and the answers gathered so far.
#[derive(Debug, Clone)]
struct Remembered {
    tool: String,
    answers: BTreeMap<String, Value>,
}

/// What a round of an interactive tool comes to.
pub(crate) enum Round {
    /// Every answer is in: these, by question.
    Answered(BTreeMap<String, Value>),
    /// The call is answered with this (questions for a 2026-07-28 client, or an error).
    Respond(Result<CallToolResponse, rmcp::ErrorData>),
}

impl Rounds {
    /// Rounds padding each state to `state_bytes`, completing unless `forever`.
    pub(crate) fn new(state_bytes: usize, forever: bool) -> Self {
        Self {
            states: Mutex::default(),
            updates: tokio::sync::broadcast::channel(64).0,
            state_bytes,
            forever,
        }
    }

    pub(crate) fn remember(&self, tool: &str, answers: BTreeMap<String, Value>) -> String {
        let mut handle = format!("{:032x}", rand::random::<u128>());
        if handle.len() < self.state_bytes {
            handle.push_str(&".".repeat(self.state_bytes - handle.len()));
        }
        let mut st = self.states.lock().unwrap_or_else(|p| p.into_inner());
        if st.order.len() >= STATES_KEPT
            && let Some(old) = st.order.pop_front()
        {
            st.by_handle.remove(&old);
        }
        st.order.push_back(handle.clone());
        st.by_handle.insert(
            handle.clone(),
            Remembered {
                tool: tool.to_owned(),
                answers,
            },
        );
        handle
    }

    /// Take (once) what a `requestState` stands for.
    pub(crate) fn recall(
        &self,
        tool: &str,
        handle: &str,
    ) -> Result<BTreeMap<String, Value>, rmcp::ErrorData> {
        let mut st = self.states.lock().unwrap_or_else(|p| p.into_inner());
        match st.by_handle.remove(handle) {
            Some(r) if r.tool == tool => {
                st.order.retain(|h| h != handle);
                Ok(r.answers)
            }
            _ => Err(rmcp::ErrorData::invalid_params(
                "requestState was not issued by this server for this tool (tampered with, reused or expired)",
                None,
            )),
        }
    }

    /// One round of `tool`, which asks `questions` (by key, each a request object
    /// `{method, params}`) in order, one stage each: what the client answered so far
    /// (this round's `inputResponses` added to what `requestState` stands for), and
    /// either every answer or what to send back.
    pub(crate) async fn ask(
        &self,
        tool: &str,
        stages: &[(&str, Value)],
        responses: Option<BTreeMap<String, Value>>,
        state: Option<String>,
        context: &RequestContext<RoleServer>,
    ) -> Round {
        let modern = context
            .protocol_version()
            .is_some_and(|v| v.as_str() >= "2026-07-28");
        if !modern {
            return self.ask_on_the_stream(stages, context).await;
        }
        let mut answers = match state.as_deref().map(|h| self.recall(tool, h)) {
            None => BTreeMap::new(),
            Some(Ok(a)) => a,
            Some(Err(e)) => return Round::Respond(Err(e)),
        };
        for (key, _) in stages {
            if let Some(answer) = responses.as_ref().and_then(|r| r.get(*key)) {
                answers.insert((*key).to_owned(), answer.clone());
            }
        }
        let next = if self.forever {
            // Every round asks the first question again, under a new key.
            Some((format!("{}-{}", stages[0].0, answers.len()), &stages[0].1))
        } else {
            stages
                .iter()
                .find(|(k, _)| !answers.contains_key(*k))
                .map(|(k, q)| ((*k).to_owned(), q))
        };
        let Some((key, question)) = next else {
            return Round::Answered(answers);
        };
        let request: InputRequest = match serde_json::from_value(question.clone()) {
            Ok(r) => r,
            Err(e) => {
                return Round::Respond(Err(rmcp::ErrorData::internal_error(
                    format!("the testbed built a bad input request: {e}"),
                    None,
                )));
            }
        };
        let handle = self.remember(tool, answers);
        let result = InputRequiredResult::new(Some(BTreeMap::from([(key, request)])), Some(handle));
        Round::Respond(Ok(result.into()))
    }

    /// A handshake revision: each question as the server's own request, in turn.
    async fn ask_on_the_stream(
        &self,
        stages: &[(&str, Value)],
        context: &RequestContext<RoleServer>,
    ) -> Round {
        let mut answers = BTreeMap::new();
        for (key, question) in stages {
            let request: ServerRequest = match serde_json::from_value(question.clone()) {
                Ok(r) => r,
                Err(e) => {
                    return Round::Respond(Err(rmcp::ErrorData::internal_error(
                        format!("the testbed built a bad request: {e}"),
                        None,
                    )));
                }
            };
            match context.peer.send_request(request).await {
                Ok(answer) => {
                    answers.insert(
                        (*key).to_owned(),
                        serde_json::to_value(answer).unwrap_or(Value::Null),
                    );
                }
                Err(e) => {
                    return Round::Respond(Ok(CallToolResult::error(vec![ContentBlock::text(
                        format!("the client did not answer {key}: {e}"),
                    )])
                    .into()));
                }
            }
        }
        Round::Answered(answers)
    }
}

/// An elicitation of a name, as a request object.
pub(crate) fn elicit_name() -> Value {
    json!({
        "method": "elicitation/create",
        "params": {
            "mode": "form",
            "message": "What is your name?",
            "requestedSchema": {
                "type": "object",
                "properties": {"name": {"type": "string", "title": "Name"}},
                "required": ["name"]
            }
        }
    })
}

/// A sampling request for `prompt`, as a request object.
pub(crate) fn sample(prompt: &str) -> Value {
    json!({
        "method": "sampling/createMessage",
        "params": {
            "messages": [{"role": "user", "content": {"type": "text", "text": prompt}}],
            "maxTokens": 100
        }
    })
}

/// A request for the client's roots, as a request object.
pub(crate) fn roots() -> Value {
    json!({"method": "roots/list"})
}

/// The name an elicitation answer gave, or what the person did instead.
pub(crate) fn elicited_name(answer: Option<&Value>) -> String {
    let Some(answer) = answer else {
        return "(no answer)".into();
    };
    match answer.get("action").and_then(Value::as_str) {
        Some("accept") => answer
            .pointer("/content/name")
            .and_then(Value::as_str)
            .map(|n| format!("name {n}"))
            .unwrap_or_else(|| "accepted without a name".into()),
        Some(other) => format!("elicitation {other}"),
        None => "a malformed elicitation answer".into(),
    }
}

/// The text a sampling answer gave.
pub(crate) fn sampled_text(answer: Option<&Value>) -> String {
    let content = answer.and_then(|a| a.get("content"));
    // One content block, or (2025-11-25) an array of them.
    let first = match content {
        Some(Value::Array(blocks)) => blocks.first(),
        other => other,
    };
    first
        .and_then(|c| c.get("text"))
        .and_then(Value::as_str)
        .map(|t| format!("sampled {t}"))
        .unwrap_or_else(|| "a sampling answer without text".into())
}

/// The roots a roots answer listed.
pub(crate) fn listed_roots(answer: Option<&Value>) -> String {
    let uris: Vec<&str> = answer
        .and_then(|a| a.get("roots"))
        .and_then(Value::as_array)
        .map(|roots| {
            roots
                .iter()
                .filter_map(|r| r.get("uri").and_then(Value::as_str))
                .collect()
        })
        .unwrap_or_default();
    format!("roots [{}]", uris.join(", "))
}
