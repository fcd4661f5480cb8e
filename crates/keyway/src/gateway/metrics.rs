//! The gateway's metrics, in the Prometheus text format at `/metrics` (behind the
//! gateway's guard: they name its servers). Per upstream server: the requests sent
//! there by outcome, and how long they took.
//!
//! Process-wide, as Prometheus metrics are: one registry for the process, whatever
//! number of gateways it runs. Labels are the configured server names and a fixed set
//! of outcomes, never anything a client sends, so their number stays bounded.

use std::{
    sync::OnceLock,
    time::{Duration, Instant},
};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, histogram::Histogram},
    registry::Registry,
};

/// How a request to an upstream ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// It got its result.
    Ok,
    /// The server answered with a JSON-RPC error.
    RpcError,
    /// It got no answer: unreachable, dropped, timed out, refused, malformed.
    Failed,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::RpcError => "rpc_error",
            Self::Failed => "failed",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    server: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServerLabels {
    server: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: String,
}

struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    seconds: Family<ServerLabels, Histogram, fn() -> Histogram>,
    refreshes: Family<RequestLabels, Counter>,
    callers: Family<OutcomeLabels, Counter>,
    flows: Family<RequestLabels, Counter>,
    store_operations: Counter,
}

fn latency_histogram() -> Histogram {
    // 5 ms to about 20 s, doubling.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.005, 2.0, 13,
    ))
}

fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let mut registry = Registry::with_prefix("keyway");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "upstream_requests",
            "Requests the gateway sent to each upstream server, by outcome",
            requests.clone(),
        );
        let seconds = Family::<ServerLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        registry.register_with_unit(
            "upstream_request_duration",
            "How long requests to each upstream server took, to their answer or failure",
            prometheus_client::registry::Unit::Seconds,
            seconds.clone(),
        );
        let refreshes = Family::<RequestLabels, Counter>::default();
        registry.register(
            "token_refreshes",
            "Refreshes of each upstream server's token by this process, by outcome (ok, rejected: the refresh token was refused and the server needs authorization, failed: no usable answer)",
            refreshes.clone(),
        );
        let callers = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "inbound_requests",
            "Requests to the gateway by what came of their caller's token (accepted, missing, invalid_request, invalid_token, insufficient_scope, unavailable)",
            callers.clone(),
        );
        let flows = Family::<RequestLabels, Counter>::default();
        registry.register(
            "connect_flows",
            "People's authorizations of per-person servers through the gateway's links, by step (offered: a call was answered with a link, started: the link was opened, completed: their tokens are stored, refused: the link was not theirs, spent or expired, or the server refused)",
            flows.clone(),
        );
        let store_operations = Counter::default();
        registry.register(
            "store_operations",
            "Operations on a Postgres store (a statement, one round trip, or a transaction)",
            store_operations.clone(),
        );
        Metrics {
            store_operations,
            registry,
            requests,
            seconds,
            refreshes,
            callers,
            flows,
        }
    })
}

/// One server's metrics, looked up once (when the gateway connects to it), so a
/// request is counted without building labels or searching the families.
#[derive(Debug, Clone)]
pub struct ServerMetrics {
    ok: Counter,
    rpc_error: Counter,
    failed: Counter,
    seconds: Histogram,
}

impl ServerMetrics {
    /// The metrics of the server named `server`.
    pub fn new(server: &str) -> Self {
        let m = metrics();
        let counter = |outcome: Outcome| {
            m.requests
                .get_or_create(&RequestLabels {
                    server: server.to_owned(),
                    outcome: outcome.as_str().to_owned(),
                })
                .clone()
        };
        Self {
            ok: counter(Outcome::Ok),
            rpc_error: counter(Outcome::RpcError),
            failed: counter(Outcome::Failed),
            seconds: m
                .seconds
                .get_or_create(&ServerLabels {
                    server: server.to_owned(),
                })
                .clone(),
        }
    }

    /// Count a request that ended as `outcome` after `took`.
    pub fn record(&self, outcome: Outcome, took: Duration) {
        match outcome {
            Outcome::Ok => self.ok.inc(),
            Outcome::RpcError => self.rpc_error.inc(),
            Outcome::Failed => self.failed.inc(),
        };
        self.seconds.observe(took.as_secs_f64());
    }

    /// [`ServerMetrics::record`] with the time since `started`.
    pub fn record_since(&self, outcome: Outcome, started: Instant) {
        self.record(outcome, started.elapsed());
    }
}

/// How a token refresh ended, for [`record_refresh`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefreshOutcome {
    /// New tokens were saved.
    Ok,
    /// The refresh token (or the client) was refused: authorization is needed.
    Rejected,
    /// No usable answer (unreachable, a server error).
    Failed,
}

/// Count a refresh of the token of the server named `server`.
pub fn record_refresh(server: &str, outcome: RefreshOutcome) {
    let outcome = match outcome {
        RefreshOutcome::Ok => "ok",
        RefreshOutcome::Rejected => "rejected",
        RefreshOutcome::Failed => "failed",
    };
    metrics()
        .refreshes
        .get_or_create(&RequestLabels {
            server: server.to_owned(),
            outcome: outcome.to_owned(),
        })
        .inc();
}

/// Count an operation on a Postgres store.
pub(crate) fn record_store_operation() {
    metrics().store_operations.inc();
}

/// A step of a person's authorization of a per-person server ([`FlowStep`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlowStep {
    /// A call was answered with a link.
    Offered,
    /// The link was opened.
    Started,
    /// The person's tokens are stored.
    Completed,
    /// The link was not theirs, was spent or expired, or a server refused.
    Refused,
}

/// Count a step of a person's authorization of the server named `server`.
pub fn record_flow(server: &str, step: FlowStep) {
    let step = match step {
        FlowStep::Offered => "offered",
        FlowStep::Started => "started",
        FlowStep::Completed => "completed",
        FlowStep::Refused => "refused",
    };
    metrics()
        .flows
        .get_or_create(&RequestLabels {
            server: server.to_owned(),
            outcome: step.to_owned(),
        })
        .inc();
}

/// Count a request to the gateway whose caller's token came to `outcome`: one of
/// a fixed set of words (`accepted`, or a refusal's OAuth error code).
pub(crate) fn record_caller(outcome: &'static str) {
    metrics()
        .callers
        .get_or_create(&OutcomeLabels {
            outcome: outcome.to_owned(),
        })
        .inc();
}

/// Every metric, in the Prometheus text format.
pub fn render() -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &metrics().registry);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_and_timed_by_server_and_outcome() {
        let m = ServerMetrics::new("metrics-test");
        m.record(Outcome::Ok, Duration::from_millis(12));
        // Another handle on the same server counts into the same series.
        ServerMetrics::new("metrics-test").record(Outcome::RpcError, Duration::from_millis(3));
        let text = render();
        assert!(
            text.contains(
                r#"keyway_upstream_requests_total{server="metrics-test",outcome="ok"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"keyway_upstream_request_duration_seconds_count{server="metrics-test"} 2"#
            ),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
