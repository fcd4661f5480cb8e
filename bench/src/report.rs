//! Results: per-round values per peer, reduced to medians and min-max, with the
//! keyway/mcp-remote ratio and each target's verdict; printed as a table and written as
//! Markdown and JSON.

use std::{collections::BTreeMap, fmt::Write as _, path::Path};

use anyhow::{Context, Result};
use serde::Serialize;

use crate::measure::Spread;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Peer {
    Keyway,
    McpRemote,
    Direct,
    /// The least any separate bridge (or gateway) process costs: `keyway-bench-floor`.
    Floor,
}

impl Peer {
    pub const ALL: [Peer; 4] = [Peer::Keyway, Peer::McpRemote, Peer::Direct, Peer::Floor];

    pub fn label(self) -> &'static str {
        match self {
            Peer::Keyway => "keyway",
            Peer::McpRemote => "mcp-remote",
            Peer::Direct => "direct",
            Peer::Floor => "floor",
        }
    }
}

/// What a target asks of keyway's median.
#[derive(Clone, Copy, Debug, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "value")]
pub enum Check {
    /// keyway <= value.
    AtMost(f64),
    /// keyway == value (counts).
    Exactly(f64),
    /// keyway <= value x mcp-remote.
    RatioToRemoteAtMost(f64),
    /// keyway <= value x the floor.
    RatioToFloorAtMost(f64),
    /// keyway <= direct + value (in the metric's unit).
    AtMostDirectPlus(f64),
    /// Every round of keyway is true (1).
    Always,
    /// A target no longer held (the text says what it was and why): the number is
    /// still reported, never judged.
    Retired(&'static str),
}

impl Check {
    fn describe(self) -> String {
        match self {
            Check::AtMost(v) => format!("<= {}", trim(v)),
            Check::Exactly(v) => format!("= {}", trim(v)),
            Check::RatioToRemoteAtMost(v) => format!("<= {} x mcp-remote", fraction(v)),
            Check::RatioToFloorAtMost(v) => format!("<= {} x floor", trim(v)),
            Check::AtMostDirectPlus(v) => format!("<= direct + {}", trim(v)),
            Check::Always => "yes, every round".into(),
            Check::Retired(was) => format!("none (retired: {was})"),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Metric {
    pub scenario: String,
    pub name: String,
    pub unit: &'static str,
    pub values: BTreeMap<Peer, Vec<f64>>,
    pub checks: Vec<Check>,
}

#[derive(Debug, Default)]
pub struct Results {
    metrics: Vec<Metric>,
}

#[derive(Debug, Serialize)]
pub struct Row {
    pub scenario: String,
    pub metric: String,
    pub unit: &'static str,
    pub keyway: Option<Spread>,
    pub mcp_remote: Option<Spread>,
    pub direct: Option<Spread>,
    pub floor: Option<Spread>,
    /// keyway's median over mcp-remote's.
    pub ratio_to_mcp_remote: Option<f64>,
    /// keyway's median over the floor's.
    pub ratio_to_floor: Option<f64>,
    pub target: String,
    /// `None` where there is no target or no value.
    pub met: Option<bool>,
}

impl Results {
    /// Declare a metric (its place in the table and its targets).
    pub fn declare(&mut self, scenario: &str, name: &str, unit: &'static str, checks: &[Check]) {
        if self.find(scenario, name).is_none() {
            self.metrics.push(Metric {
                scenario: scenario.into(),
                name: name.into(),
                unit,
                values: BTreeMap::new(),
                checks: checks.to_vec(),
            });
        }
    }

    fn find(&mut self, scenario: &str, name: &str) -> Option<&mut Metric> {
        self.metrics
            .iter_mut()
            .find(|m| m.scenario == scenario && m.name == name)
    }

    /// One round's value; the metric is declared (without targets) if it was not.
    pub fn record(&mut self, scenario: &str, name: &str, unit: &'static str, peer: Peer, v: f64) {
        self.declare(scenario, name, unit, &[]);
        if let Some(m) = self.find(scenario, name) {
            m.values.entry(peer).or_default().push(v);
        }
    }

    /// Rows in scenario order (scenario names start with their number), metrics in the
    /// order they were declared; metrics without a value in any round are left out.
    pub fn rows(&self) -> Vec<Row> {
        let mut metrics: Vec<&Metric> = self
            .metrics
            .iter()
            .filter(|m| !m.values.is_empty())
            .collect();
        metrics.sort_by_key(|m| scenario_number(&m.scenario));
        metrics
            .into_iter()
            .map(|m| {
                let spread = |p: Peer| m.values.get(&p).and_then(|v| Spread::of(v));
                let (k, r, d, f) = (
                    spread(Peer::Keyway),
                    spread(Peer::McpRemote),
                    spread(Peer::Direct),
                    spread(Peer::Floor),
                );
                // A ratio of differences that may be negative (added p50) says nothing.
                let ratio = |other: Option<Spread>| match (k, other) {
                    (Some(k), Some(o)) if o.median > 0.0 && k.median >= 0.0 => {
                        Some(k.median / o.median)
                    }
                    _ => None,
                };
                let judged = m.checks.iter().any(|c| !matches!(c, Check::Retired(_)));
                let met = if judged {
                    k.map(|k| {
                        m.checks.iter().all(|c| match *c {
                            Check::AtMost(v) => k.median <= v,
                            Check::Exactly(v) => k.min == v && k.max == v,
                            Check::RatioToRemoteAtMost(v) => {
                                r.is_some_and(|r| k.median <= v * r.median)
                            }
                            Check::RatioToFloorAtMost(v) => {
                                f.is_some_and(|f| k.median <= v * f.median)
                            }
                            Check::AtMostDirectPlus(v) => {
                                d.is_some_and(|d| k.median <= d.median + v)
                            }
                            Check::Always => k.min == 1.0,
                            Check::Retired(_) => true,
                        })
                    })
                } else {
                    None
                };
                Row {
                    scenario: m.scenario.clone(),
                    metric: m.name.clone(),
                    unit: m.unit,
                    keyway: k,
                    mcp_remote: r,
                    direct: d,
                    floor: f,
                    ratio_to_mcp_remote: ratio(r),
                    ratio_to_floor: ratio(f),
                    target: m
                        .checks
                        .iter()
                        .map(|c| c.describe())
                        .collect::<Vec<_>>()
                        .join(", "),
                    met,
                }
            })
            .collect()
    }
}

fn scenario_number(s: &str) -> u32 {
    s.split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(u32::MAX)
}

fn trim(v: f64) -> String {
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

fn fraction(v: f64) -> String {
    let inv = 1.0 / v;
    if (inv - inv.round()).abs() < 1e-9 {
        format!("1/{}", inv.round())
    } else {
        trim(v)
    }
}

fn cell(s: Option<Spread>) -> String {
    match s {
        None => "-".into(),
        Some(s) if s.rounds == 1 || s.min == s.max => num(s.median),
        Some(s) => format!("{} ({}-{})", num(s.median), num(s.min), num(s.max)),
    }
}

fn num(v: f64) -> String {
    if (v == v.trunc() && v.abs() < 1e9) || v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else if v.abs() >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// The Markdown table (also what is printed).
pub fn markdown(rows: &[Row], header: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{header}\n");
    let _ = writeln!(
        out,
        "| scenario | metric | keyway | mcp-remote | direct | floor | keyway/mcp-remote | keyway/floor | target | met |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|");
    let ratio = |x: Option<f64>| x.map(|x| format!("{x:.3}")).unwrap_or_else(|| "-".into());
    for r in rows {
        let _ = writeln!(
            out,
            "| {} | {} ({}) | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.scenario,
            r.metric,
            r.unit,
            cell(r.keyway),
            cell(r.mcp_remote),
            cell(r.direct),
            cell(r.floor),
            ratio(r.ratio_to_mcp_remote),
            ratio(r.ratio_to_floor),
            if r.target.is_empty() { "-" } else { &r.target },
            match r.met {
                Some(true) => "yes",
                Some(false) => "**NO**",
                None => "-",
            }
        );
    }
    out
}

pub fn write(dir: &Path, rows: &[Row], header: &str, meta: &serde_json::Value) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(dir.join("results.md"), markdown(rows, header))?;
    let json = serde_json::json!({"meta": meta, "rows": rows});
    std::fs::write(dir.join("results.json"), serde_json::to_vec_pretty(&json)?)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_follow_the_medians() {
        let mut r = Results::default();
        r.declare("s", "ms", "ms", &[Check::RatioToRemoteAtMost(1.0 / 15.0)]);
        for (k, m) in [(10.0, 300.0), (30.0, 310.0), (12.0, 290.0)] {
            r.record("s", "ms", "ms", Peer::Keyway, k);
            r.record("s", "ms", "ms", Peer::McpRemote, m);
        }
        r.declare("s", "refreshes", "count", &[Check::Exactly(1.0)]);
        r.record("s", "refreshes", "count", Peer::Keyway, 1.0);
        r.record("s", "refreshes", "count", Peer::Keyway, 2.0);
        let rows = r.rows();
        assert_eq!(rows[0].met, Some(true), "12 <= 300/15");
        assert_eq!(rows[0].target, "<= 1/15 x mcp-remote");
        assert_eq!(rows[1].met, Some(false), "one round refreshed twice");
        let md = markdown(&rows, "# t");
        assert!(
            md.contains("| s | ms (ms) | 12 (10-30) | 300 (290-310) |"),
            "{md}"
        );
    }

    #[test]
    fn floor_and_direct_checks_and_retired_targets() {
        let mut r = Results::default();
        r.declare("s", "cpu", "µs", &[Check::RatioToFloorAtMost(1.6)]);
        r.record("s", "cpu", "µs", Peer::Keyway, 40.0);
        r.record("s", "cpu", "µs", Peer::Floor, 26.0);
        r.declare("s", "first", "ms", &[Check::AtMostDirectPlus(25.0)]);
        r.record("s", "first", "ms", Peer::Keyway, 110.0);
        r.record("s", "first", "ms", Peer::Direct, 80.0);
        r.declare(
            "s",
            "rate",
            "calls/s",
            &[Check::Retired(">= 85% of direct")],
        );
        r.record("s", "rate", "calls/s", Peer::Keyway, 1.0);
        r.record("s", "rate", "calls/s", Peer::Direct, 2.0);
        let rows = r.rows();
        assert_eq!(rows[0].met, Some(true), "40 <= 1.6 x 26");
        assert_eq!(
            rows[0].ratio_to_floor.map(|x| (x * 100.0).round()),
            Some(154.0)
        );
        assert_eq!(rows[1].met, Some(false), "110 > 80 + 25");
        assert_eq!(rows[2].met, None, "a retired target is not judged");
        let mut r = Results::default();
        r.record("s", "added", "ms", Peer::Keyway, -0.03);
        r.record("s", "added", "ms", Peer::Floor, -0.04);
        assert_eq!(
            r.rows()[0].ratio_to_floor,
            None,
            "no ratio of negative numbers"
        );
        assert_eq!(rows[2].target, "none (retired: >= 85% of direct)");
    }
}
