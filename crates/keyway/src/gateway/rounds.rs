//! A server that speaks only MCP 2026-07-28 asks for the client's input by answering
//! a request `input_required` (its questions in `inputRequests`, and a
//! `requestState`). A handshake-era client knows these questions as the server's own
//! requests (`elicitation/create`, `sampling/createMessage`, `roots/list`): the gateway
//! asks them of the session whose request it is, as such requests, and retries the
//! request with the answers and the `requestState` exactly as the server gave it, at
//! most [`MAX_ROUNDS`] times. The server learned what the client can take from the
//! capabilities the client declared at `initialize`, which the gateway sends with its
//! requests ([`super::upstream::ClientSide`]).

use std::time::Duration;

use serde_json::{Map, Value, json};
use tokio::sync::oneshot;

use super::{Carrier, Gateway, Notice, Outcome, upstream::ClientSide};
use crate::bridge::{MAX_REQUEST_STATE, MAX_ROUNDS};

/// How long the gateway waits for a client to answer one of the server's questions.
pub const ASK_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// The prefix of the ids of the gateway's questions to clients.
pub(super) const QUESTION: &str = "keyway-ask-";

/// The JSON-RPC error code of a request that could not be completed.
const FAILED: i64 = -32000;

fn failed(message: impl Into<String>) -> Value {
    json!({"code": FAILED, "message": message.into()})
}

/// Methods whose answer may be `input_required`.
pub(super) fn may_ask(method: &str) -> bool {
    matches!(method, "tools/call" | "prompts/get" | "resources/read")
}

/// A result as a value (a raw one parsed only if it may ask for input).
fn value_of(outcome: Outcome) -> Result<Value, Outcome> {
    match outcome {
        Outcome::Built(v) => Ok(v),
        Outcome::Raw(raw) => {
            if memchr::memmem::find(raw.get().as_bytes(), b"input_required").is_none() {
                return Err(Outcome::Raw(raw));
            }
            serde_json::from_str(raw.get()).map_err(|_| Outcome::Raw(raw))
        }
    }
}

/// Takes the gateway's questions out of its table when their round ends, however it
/// ends (answered, failed, or the client's request cancelled).
struct Asked<'a> {
    gw: &'a Gateway,
    ids: Vec<String>,
}

impl Drop for Asked<'_> {
    fn drop(&mut self) {
        let mut questions = self.gw.questions();
        for id in &self.ids {
            questions.remove(id);
        }
    }
}

impl Gateway {
    /// `outcome`, the answer to a handshake-era client's `method` request with
    /// `params` from `session` (`request`: its id's JSON text), with the server's `input_required` rounds driven to
    /// their end.
    pub(super) async fn rounds(
        &self,
        session: &str,
        request: &str,
        method: &str,
        params: &Value,
        outcome: Outcome,
        carrier: &Carrier,
    ) -> Result<Outcome, Value> {
        let mut result = match value_of(outcome) {
            Ok(v) => v,
            Err(as_it_is) => return Ok(as_it_is),
        };
        let mut state_only = 0u32;
        for round in 0..=MAX_ROUNDS {
            if result.get("resultType").and_then(Value::as_str) != Some("input_required") {
                return Ok(Outcome::Built(result));
            }
            if !may_ask(method) {
                return Err(failed(format!(
                    "the server answered {method} input_required, which only tools/call, prompts/get and resources/read may be"
                )));
            }
            if round == MAX_ROUNDS {
                return Err(failed(format!(
                    "the server still wanted more input after {MAX_ROUNDS} rounds of {method}; keyway stopped asking"
                )));
            }
            let state = match result.get("requestState") {
                None => None,
                Some(Value::String(st)) if st.len() <= MAX_REQUEST_STATE => Some(st.clone()),
                Some(Value::String(st)) => {
                    return Err(failed(format!(
                        "the server's requestState is {} KiB, over keyway's limit of {} KiB",
                        st.len() / 1024,
                        MAX_REQUEST_STATE / 1024
                    )));
                }
                Some(_) => return Err(failed("the server's requestState is not a string")),
            };
            let questions = match result.get_mut("inputRequests").map(Value::take) {
                None => Map::new(),
                Some(Value::Object(q)) => q,
                Some(_) => return Err(failed("the server's inputRequests is not an object")),
            };
            if questions.is_empty() && state.is_none() {
                return Err(failed(
                    "the server answered input_required with neither inputRequests nor requestState",
                ));
            }
            let responses = if questions.is_empty() {
                // Only state: the server wants the same request again, a little later.
                tokio::time::sleep(Duration::from_millis(50u64 << state_only.min(4))).await;
                state_only += 1;
                None
            } else {
                state_only = 0;
                Some(
                    self.ask(session, request, questions, carrier.client())
                        .await?,
                )
            };
            let mut retry = params.clone();
            if let Some(p) = retry.as_object_mut() {
                p.remove("inputResponses");
                p.remove("requestState");
                if let Some(r) = responses {
                    p.insert("inputResponses".into(), Value::Object(r));
                }
                if let Some(st) = state {
                    p.insert("requestState".into(), Value::String(st));
                }
            }
            let outcome = self
                .dispatch(session, method, retry, carrier, false)
                .await?;
            result = match value_of(outcome) {
                Ok(v) => v,
                Err(as_it_is) => return Ok(as_it_is),
            };
        }
        Err(failed("unreachable: the rounds loop returns"))
    }

    /// Ask `session`'s client each of the server's questions (at once), as the
    /// server's own requests in the course of its `request`; their results by key, or the error that ends the
    /// request.
    async fn ask(
        &self,
        session: &str,
        request: &str,
        questions: Map<String, Value>,
        client: Option<&ClientSide>,
    ) -> Result<Map<String, Value>, Value> {
        if !self.is_listening(session) {
            return Err(failed(
                "the server asked for the client's input, and the client has no stream open to be asked on (open the session's GET stream, or accept text/event-stream on the call)",
            ));
        }
        let mut asked = Asked {
            gw: self,
            ids: Vec::with_capacity(questions.len()),
        };
        let mut waiting = Vec::with_capacity(questions.len());
        for (key, question) in questions {
            let method = question
                .get("method")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            let Some(needs) = crate::mcp::modern::input_capability(&method) else {
                return Err(failed(format!(
                    "the server asked for input with {method:?}, which is not an input request"
                )));
            };
            if client.is_none_or(|c| c.capabilities.get(needs).is_none()) {
                return Err(failed(format!(
                    "the server asked for {method}, but the client did not declare the {needs} capability"
                )));
            }
            let n = self
                .next_question
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let id = format!("{QUESTION}{n}");
            let (tx, rx) = oneshot::channel();
            self.questions()
                .insert(id.clone(), (session.to_owned(), tx));
            asked.ids.push(id.clone());
            let mut message = json!({"jsonrpc": "2.0", "id": id, "method": method});
            if let Some(p) = question.get("params") {
                message["params"] = p.clone();
            }
            let notice = Notice::to(session.to_owned(), Some(request.to_owned()), message);
            if self.downstream.send(notice).is_err() {
                return Err(failed(format!(
                    "the server asked for {method}, and the client has no stream open to be asked on"
                )));
            }
            waiting.push((key, method, rx));
        }
        let mut responses = Map::new();
        for (key, method, rx) in waiting {
            let answer = match tokio::time::timeout(ASK_TIMEOUT, rx).await {
                Ok(Ok(a)) => a,
                Ok(Err(_)) => {
                    return Err(failed(format!(
                        "the client's session ended before it answered {method}"
                    )));
                }
                Err(_) => {
                    return Err(failed(format!(
                        "the client did not answer {method} within {} minutes",
                        ASK_TIMEOUT.as_secs() / 60
                    )));
                }
            };
            match (answer.get("result"), answer.get("error")) {
                (Some(result), _) => {
                    responses.insert(key, result.clone());
                }
                (None, Some(e)) => {
                    let code = e.get("code").and_then(Value::as_i64).unwrap_or(FAILED);
                    let why = e
                        .get("message")
                        .and_then(Value::as_str)
                        .unwrap_or("no reason");
                    return Err(json!({"code": code, "message": format!(
                        "the client refused the server's {method}: {why}"
                    )}));
                }
                (None, None) => {
                    return Err(failed(format!(
                        "the client answered {method} with neither result nor error"
                    )));
                }
            }
        }
        Ok(responses)
    }

    /// `session`'s answer to one of the gateway's questions: to the round waiting for
    /// it (another session's answer is ignored).
    pub(super) fn answered(&self, session: &str, id: &str, answer: Value) {
        let mut questions = self.questions();
        if questions.get(id).is_some_and(|(s, _)| s == session)
            && let Some((_, tx)) = questions.remove(id)
        {
            let _ = tx.send(answer);
        }
    }
}
