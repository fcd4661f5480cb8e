//! A 2026-07-28 client of the gateway, a server that speaks only the handshake
//! revisions: the server's own requests (elicitation, sampling, roots) made in the
//! course of such a client's request become multi round-trip answers, as
//! `keyway proxy` makes them (see `bridge::reverse`).
//!
//! The client's request is carried on the gateway's session by a task of its own. A
//! question the server sends on that request's stream answers the client's request
//! `input_required` (the question in `inputRequests`, and a `requestState` that is a
//! random handle to the request left waiting). The client's retry with its
//! `inputResponses` and that state answers the server's questions and waits on for the
//! server's answer, or its next question ([`MAX_ROUNDS`] at most). A state of the
//! gateway's that names nothing (tampered with, used twice, expired, or for another
//! request) is refused with -32602; a round the client does not come back to within
//! [`PARK_TIMEOUT`] is given up, the server's questions refused and its request
//! cancelled.

use std::sync::{Arc, Weak};

use serde_json::{Map, Value, json};
use tokio::{sync::mpsc, task::JoinHandle};

use super::{Gateway, InFlight, Outcome};
use crate::{
    bridge::MAX_ROUNDS,
    mcp::modern::{
        MAX_WAITING_ROUNDS, META_CLIENT_CAPABILITIES, PARK_TIMEOUT, ROUND_STATE, input_capability,
        input_request, request_subject, unknown_round,
    },
};

/// The session under which a carried request is in [`Gateway::in_flight`] for its
/// whole life, across its rounds (so each question of the server finds it).
pub(super) const CARRIED_SESSION: &str = "keyway-carried";

/// A server's question in the course of a 2026-07-28 client's request: the server
/// and its request.
pub(super) type Question = (usize, Value);

/// A client request being carried by a task of its own.
pub(super) struct Carried {
    task: JoinHandle<Result<Outcome, Value>>,
    questions: mpsc::Receiver<Question>,
    flight: Arc<InFlight>,
    rounds: usize,
    gw: Weak<Gateway>,
    /// Its key in [`Gateway::in_flight`].
    key: (String, String),
}

impl Drop for Carried {
    /// Finished, or nobody waits for it any more (its client cancelled, went away,
    /// or did not come back for a round): the server hears so, and the questions it
    /// asked meanwhile are refused.
    fn drop(&mut self) {
        let unfinished = !self.task.is_finished();
        self.task.abort();
        let Some(gw) = self.gw.upgrade() else { return };
        gw.in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.key);
        let mut queued = Vec::new();
        while let Ok(q) = self.questions.try_recv() {
            queued.push(q);
        }
        let at = self.flight.carrier.get().filter(|_| unfinished);
        if queued.is_empty() && at.is_none() {
            return;
        }
        tokio::spawn(async move {
            for (server, request) in queued {
                let id = request.get("id").cloned().unwrap_or(Value::Null);
                gw.refuse(server, id, "nobody waits for the request any more")
                    .await;
            }
            if let Some((server, upstream)) = at
                && let Ok(u) = gw.slot(server)
            {
                let note = json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
                    "params": {"requestId": upstream, "reason": "the client no longer waits for it"}});
                if let Err(e) = u.send_raw(&note).await {
                    tracing::debug!("cancelling at the server failed: {e}");
                }
            }
        });
    }
}

/// A round the client was asked to come back to.
pub(super) struct Parked {
    method: String,
    /// The tool, prompt or resource it is about.
    name: Option<String>,
    carried: Carried,
    /// The server's questions waiting for the client's answers: input key, server,
    /// the server's request id.
    asked: Vec<(String, usize, Value)>,
    /// The task that gives the round up after [`PARK_TIMEOUT`].
    expiry: tokio::task::AbortHandle,
}

impl Gateway {
    /// Whether a 2026-07-28 client's `method` request is carried by a task of its
    /// own: it may be answered `input_required`, and some server speaks to the
    /// gateway on a handshake session (where its questions come as requests).
    pub(super) fn carries(&self, method: &str) -> bool {
        super::rounds::may_ask(method)
            && (0..self.slots.len()).any(|i| self.slot(i).is_ok_and(|u| u.has_session()))
    }

    /// The round a 2026-07-28 retry names with one of the gateway's `requestState`s:
    /// `None` when its state is none of the gateway's (the server's own, passed on),
    /// an error when it is one but names no waiting round of this request.
    pub(super) fn take_round(&self, method: &str, params: &Value) -> Option<Result<Parked, Value>> {
        let state = params.get("requestState")?.as_str()?;
        if !state.starts_with(ROUND_STATE) {
            return None;
        }
        let mut parked = self.parked();
        // Sent with another request: refused, and the round kept for the right one.
        let matches = parked
            .get(state)
            .is_some_and(|p| p.method == method && p.name == request_subject(params));
        let round = if matches { parked.remove(state) } else { None };
        drop(parked);
        Some(match round {
            Some(p) => {
                p.expiry.abort();
                Ok(p)
            }
            None => Err(unknown_round()),
        })
    }

    /// Start carrying a 2026-07-28 client's request on a task of its own.
    pub(super) fn carry(
        &self,
        session: &str,
        method: &str,
        params: Value,
        flight: Arc<InFlight>,
        questions: mpsc::Receiver<Question>,
    ) -> Result<Carried, Value> {
        let gw = self
            .me
            .upgrade()
            .ok_or_else(|| json!({"code": -32603, "message": "the gateway is shutting down"}))?;
        let n = self
            .next_question
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let key = (CARRIED_SESSION.to_owned(), n.to_string());
        self.in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.clone(), flight.clone());
        let (session, method, carrier) = (session.to_owned(), method.to_owned(), flight.clone());
        let task = tokio::spawn(async move {
            gw.dispatch(&session, &method, params, &carrier.carrier, true)
                .await
        });
        Ok(Carried {
            task,
            questions,
            flight,
            rounds: 0,
            gw: self.me.clone(),
            key,
        })
    }

    /// Go on with a round the client came back to: the server's questions get the
    /// answers in `params.inputResponses`.
    pub(super) async fn resume(&self, parked: Parked, params: &Value) -> Result<Outcome, Value> {
        let Parked {
            method,
            name,
            carried,
            asked,
            expiry: _,
        } = parked;
        let responses = params.get("inputResponses");
        for (key, server, id) in asked {
            let answer = responses.and_then(|r| r.get(&key)).cloned();
            self.answer_server(
                server,
                id,
                answer.ok_or(format!("the client gave no answer to {key}")),
            )
            .await;
        }
        let capabilities = params
            .get("_meta")
            .and_then(|m| m.get(META_CLIENT_CAPABILITIES))
            .cloned()
            .unwrap_or_default();
        self.carry_on(carried, method, name, capabilities).await
    }

    /// Wait for the server's answer to a carried request, passing it on; a question
    /// the server asks meanwhile ends this round `input_required`.
    pub(super) async fn carry_on(
        &self,
        mut carried: Carried,
        method: String,
        name: Option<String>,
        capabilities: Value,
    ) -> Result<Outcome, Value> {
        loop {
            let first = tokio::select! {
                done = &mut carried.task => {
                    return done.unwrap_or_else(|e| Err(json!({"code": -32603, "message": format!("carrying the request failed: {e}")})));
                }
                q = carried.questions.recv() => q,
            };
            // The sender lives in the request's flight, which `carried` holds: the
            // channel cannot have closed.
            let Some(first) = first else {
                return Err(
                    json!({"code": -32603, "message": "the request's questions channel closed"}),
                );
            };
            let mut questions = Map::new();
            let mut asked = Vec::new();
            let mut next = Some(first);
            while let Some((server, request)) = next.take() {
                let id = request.get("id").cloned().unwrap_or(Value::Null);
                let asked_for = request
                    .get("method")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                match (asked_for.as_str(), input_capability(&asked_for)) {
                    ("ping", _) => self.answer_server(server, id, Ok(json!({}))).await,
                    (_, Some(c)) if capabilities.get(c).is_some() => {
                        let key =
                            format!("{}-{}", asked_for.replace('/', "-"), questions.len() + 1);
                        let q = input_request(&request);
                        questions.insert(key.clone(), q);
                        asked.push((key, server, id));
                    }
                    (_, Some(c)) => {
                        let why = format!(
                            "the client did not declare the {c} capability for this request"
                        );
                        self.answer_server(server, id, Err(why)).await;
                    }
                    (other, None) => {
                        let why =
                            format!("keyway does not relay {other} to a client of MCP 2026-07-28");
                        self.answer_server(server, id, Err(why)).await;
                    }
                }
                // Questions the server sent together go in one round.
                next = carried.questions.try_recv().ok();
            }
            if asked.is_empty() {
                continue;
            }
            carried.rounds += 1;
            let full = self.parked().len() >= MAX_WAITING_ROUNDS;
            if carried.rounds > MAX_ROUNDS || full {
                let why = if full {
                    "too many requests wait for their clients' answers"
                } else {
                    "the server asked more than keyway relays for one request"
                };
                for (_, server, id) in asked {
                    self.answer_server(server, id, Err(why.to_owned())).await;
                }
                continue;
            }
            let state = format!("{ROUND_STATE}{:032x}", rand::random::<u128>());
            let expiry = tokio::spawn(expire(self.me.clone(), state.clone())).abort_handle();
            self.parked().insert(
                state.clone(),
                Parked {
                    method,
                    name,
                    carried,
                    asked,
                    expiry,
                },
            );
            return Ok(Outcome::Built(json!({
                "resultType": "input_required",
                "inputRequests": questions,
                "requestState": state,
            })));
        }
    }

    /// Refuse a round's questions to the server; its request is cancelled there as
    /// the round is dropped.
    fn refuse_round(&self, parked: Parked) {
        let Some(gw) = self.me.upgrade() else { return };
        tokio::spawn(async move {
            for (_, server, id) in parked.asked {
                let why = "the client did not come back with its answers".to_owned();
                gw.answer_server(server, id, Err(why)).await;
            }
            // Dropping the carried request tells the server it is cancelled.
            drop(parked.carried);
        });
    }

    /// Answer server `server`'s request `id` with a result or an error.
    async fn answer_server(&self, server: usize, id: Value, answer: Result<Value, String>) {
        match answer {
            Ok(result) => {
                if let Ok(u) = self.slot(server) {
                    let message = json!({"jsonrpc": "2.0", "id": id, "result": result});
                    if let Err(e) = u.send_raw(&message).await {
                        tracing::debug!("answering a server request failed: {e}");
                    }
                }
            }
            Err(why) => self.refuse(server, id, &why).await,
        }
    }

    #[allow(clippy::type_complexity)]
    fn parked(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, Parked>> {
        self.parked.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A round the client did not come back to within [`PARK_TIMEOUT`].
async fn expire(gw: Weak<Gateway>, state: String) {
    tokio::time::sleep(PARK_TIMEOUT).await;
    let Some(gw) = gw.upgrade() else { return };
    let parked = gw.parked().remove(&state);
    if let Some(p) = parked {
        gw.refuse_round(p);
    }
}
