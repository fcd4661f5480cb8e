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

struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    seconds: Family<ServerLabels, Histogram, fn() -> Histogram>,
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
        Metrics {
            registry,
            requests,
            seconds,
        }
    })
}

/// Count a request to `server` that ended as `outcome` after `took`.
pub fn record(server: &str, outcome: Outcome, took: Duration) {
    let m = metrics();
    m.requests
        .get_or_create(&RequestLabels {
            server: server.to_owned(),
            outcome: outcome.as_str().to_owned(),
        })
        .inc();
    m.seconds
        .get_or_create(&ServerLabels {
            server: server.to_owned(),
        })
        .observe(took.as_secs_f64());
}

/// Time a request: [`record`] with the time since `started`.
pub fn record_since(server: &str, outcome: Outcome, started: Instant) {
    record(server, outcome, started.elapsed());
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
        record("metrics-test", Outcome::Ok, Duration::from_millis(12));
        record("metrics-test", Outcome::RpcError, Duration::from_millis(3));
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
