//! The authorizations the settings page started, as its cards show them: each one
//! under its server's id, from "authorizing" (with the page to open, or the device
//! code to enter) to authorized, declined or failed.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use serde::Serialize;
use tokio::sync::watch;
use url::Url;

use crate::auth::{AuthError, BrowserError, Opener, Reporter, callback::Refusal};

/// Finished flows kept for their cards, at most (the oldest go first).
const KEEP_FINISHED: usize = 64;

/// The device grant's code, as the page shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DeviceView {
    /// Where to enter the code.
    pub verification_uri: String,
    /// The same page with the code filled in, when the server gave one.
    pub complete: Option<String>,
    /// The code.
    pub user_code: String,
    /// What the page may link to and open: `complete`, else `verification_uri`, only
    /// when it is https (or http on this machine). Anything else is shown as text.
    pub link: Option<String>,
}

/// `url` if a page may link to it: https, or http to a loopback host.
fn linkable(url: &str) -> Option<String> {
    let u = Url::parse(url).ok()?;
    crate::auth::urls::may_carry_secrets(&u, false)
        .is_ok()
        .then(|| u.to_string())
}

/// Where one authorization stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "phase", rename_all = "kebab-case")]
pub enum FlowView {
    /// Started: discovery and registration, before there is a page to open.
    Starting,
    /// Waiting for the person: at `url` (the authorization page), or at the device
    /// grant's page with its code.
    Authorizing {
        /// The authorization page.
        url: Option<String>,
        /// The device grant's code.
        device: Option<DeviceView>,
    },
    /// Done: the server is authorized.
    Authorized {
        /// The authorization server.
        issuer: String,
        /// Anything worth saying (listing tools failed afterwards).
        note: Option<String>,
    },
    /// The person said no.
    Declined {
        /// In words.
        reason: String,
    },
    /// Anything else stopped it.
    Failed {
        /// In words, with what to do next when known.
        reason: String,
    },
}

impl FlowView {
    /// Whether the flow has ended.
    pub fn finished(&self) -> bool {
        matches!(
            self,
            Self::Authorized { .. } | Self::Declined { .. } | Self::Failed { .. }
        )
    }

    /// Whether there is something for the page to act on: a page to open, a code to
    /// show, or the end.
    pub fn actionable(&self) -> bool {
        match self {
            Self::Starting => false,
            Self::Authorizing { url, device } => url.is_some() || device.is_some(),
            _ => true,
        }
    }

    /// The end of a flow that failed with `e`.
    pub fn from_error(e: &AuthError) -> Self {
        match e {
            AuthError::Declined | AuthError::Callback(Refusal::Declined) => Self::Declined {
                reason: e.to_string(),
            },
            _ => Self::Failed {
                reason: e.to_string(),
            },
        }
    }
}

/// Every flow the page started, by server id; watchers learn of each change.
#[derive(Debug, Clone)]
pub struct Flows {
    inner: Arc<Mutex<Inner>>,
    changed: watch::Sender<u64>,
}

#[derive(Debug, Default)]
struct Inner {
    flows: BTreeMap<String, (u64, FlowView)>,
    /// The tasks of the flows under way, to cancel them.
    tasks: BTreeMap<String, Running>,
    next: u64,
}

/// A flow's task, and whether it adds its server (so cancelling it takes the new row
/// away again).
#[derive(Debug)]
struct Running {
    task: tokio::task::AbortHandle,
    adds: bool,
}

/// Why a flow could not start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AlreadyRunning;

impl Default for Flows {
    fn default() -> Self {
        Self {
            inner: Default::default(),
            changed: watch::channel(0).0,
        }
    }
}

impl Flows {
    /// Set the view of `id`'s flow.
    pub fn set(&self, id: &str, view: FlowView) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        inner.next += 1;
        let n = inner.next;
        inner.flows.insert(id.to_owned(), (n, view));
        // Forget the oldest finished flows beyond the cap; flows under way stay.
        let finished: Vec<(u64, String)> = inner
            .flows
            .iter()
            .filter(|(_, (_, v))| v.finished())
            .map(|(k, (n, _))| (*n, k.clone()))
            .collect();
        if finished.len() > KEEP_FINISHED {
            let mut finished = finished;
            finished.sort();
            for (_, k) in finished.iter().take(finished.len() - KEEP_FINISHED) {
                inner.flows.remove(k);
            }
        }
        drop(inner);
        self.changed.send_modify(|v| *v += 1);
    }

    /// Mark `id`'s flow as starting, unless one is under way already (checked and set
    /// at once, so two clicks never start two flows for one server).
    pub fn try_start(&self, id: &str) -> Result<(), AlreadyRunning> {
        {
            let Ok(mut inner) = self.inner.lock() else {
                return Err(AlreadyRunning);
            };
            if inner.flows.get(id).is_some_and(|(_, v)| !v.finished()) {
                return Err(AlreadyRunning);
            }
            inner.next += 1;
            let n = inner.next;
            inner.flows.insert(id.to_owned(), (n, FlowView::Starting));
        }
        self.changed.send_modify(|v| *v += 1);
        Ok(())
    }

    /// The task that runs `id`'s flow; `adds`: it adds the server (a cancel takes the
    /// new row away).
    pub fn running(&self, id: &str, task: tokio::task::AbortHandle, adds: bool) {
        if let Ok(mut inner) = self.inner.lock() {
            inner.tasks.insert(id.to_owned(), Running { task, adds });
        }
    }

    /// The flow of `id` ended (its task is done): forget the task.
    pub fn ended(&self, id: &str) {
        if let Ok(mut inner) = self.inner.lock() {
            inner.tasks.remove(id);
        }
    }

    /// Stop `id`'s flow if it runs: its task is aborted and its view says so. `Some`
    /// with whether the flow was adding its server (its row is then the caller's to
    /// take away), `None` when nothing ran.
    pub fn cancel(&self, id: &str, why: &str) -> Option<bool> {
        let running = {
            let mut inner = self.inner.lock().ok()?;
            let running = inner.tasks.remove(id)?;
            // A flow that has already ended is not undone.
            let (_, view) = inner.flows.get_mut(id)?;
            if view.finished() {
                return None;
            }
            running.task.abort();
            *view = FlowView::Failed {
                reason: why.to_owned(),
            };
            running
        };
        self.changed.send_modify(|v| *v += 1);
        Some(running.adds)
    }

    /// Stop every flow under way; the ids of those that were adding their server.
    pub fn cancel_all(&self, why: &str) -> Vec<String> {
        let ids: Vec<String> = self
            .inner
            .lock()
            .map(|i| i.tasks.keys().cloned().collect())
            .unwrap_or_default();
        ids.into_iter()
            .filter(|id| self.cancel(id, why) == Some(true))
            .collect()
    }

    /// Change `id`'s view in place, if it is under way.
    fn update(&self, id: &str, f: impl FnOnce(&mut FlowView)) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        if let Some((_, v)) = inner.flows.get_mut(id)
            && !v.finished()
        {
            f(v);
        }
        drop(inner);
        self.changed.send_modify(|v| *v += 1);
    }

    /// Forget `id`'s flow (its server was removed).
    pub fn forget(&self, id: &str) {
        if let Ok(mut inner) = self.inner.lock() {
            inner.flows.remove(id);
        }
        self.changed.send_modify(|v| *v += 1);
    }

    /// The view of `id`'s flow.
    pub fn get(&self, id: &str) -> Option<FlowView> {
        self.inner
            .lock()
            .ok()
            .and_then(|i| i.flows.get(id).map(|(_, v)| v.clone()))
    }

    /// Whether any flow is under way.
    pub fn any_running(&self) -> bool {
        self.inner
            .lock()
            .map(|i| i.flows.values().any(|(_, v)| !v.finished()))
            .unwrap_or(false)
    }

    /// Every flow's view.
    pub fn all(&self) -> BTreeMap<String, FlowView> {
        self.inner
            .lock()
            .map(|i| {
                i.flows
                    .iter()
                    .map(|(k, (_, v))| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A receiver that changes with every flow change.
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Wait (at most `limit`) until `id`'s flow has something for the page to act
    /// on; its view then.
    pub async fn actionable(&self, id: &str, limit: Duration) -> Option<FlowView> {
        let mut rx = self.watch();
        let _ = tokio::time::timeout(limit, async {
            loop {
                if self.get(id).is_some_and(|v| v.actionable()) {
                    return;
                }
                if rx.changed().await.is_err() {
                    return;
                }
            }
        })
        .await;
        self.get(id)
    }

    /// The reporter and opener of the flow for `id`.
    pub fn witness(&self, id: &str) -> Arc<Witness> {
        Arc::new(Witness {
            id: id.to_owned(),
            flows: self.clone(),
        })
    }
}

/// What a flow for one server tells the page: it shows the authorization page (as
/// the [`Opener`], the page opens it in a tab) and the device code (as the
/// [`Reporter`]).
#[derive(Debug)]
pub struct Witness {
    id: String,
    flows: Flows,
}

impl Opener for Witness {
    fn open<'a>(
        &'a self,
        url: &'a Url,
    ) -> futures::future::BoxFuture<'a, Result<(), BrowserError>> {
        let url = url.to_string();
        Box::pin(async move {
            self.flows.update(&self.id, |v| {
                *v = FlowView::Authorizing {
                    url: Some(url),
                    device: None,
                }
            });
            Ok(())
        })
    }
}

impl Reporter for Witness {
    fn device_code(&self, verification_uri: &str, complete: Option<&str>, user_code: &str) {
        let link = complete
            .and_then(linkable)
            .or_else(|| linkable(verification_uri));
        let device = DeviceView {
            verification_uri: verification_uri.to_owned(),
            complete: complete.map(str::to_owned),
            user_code: user_code.to_owned(),
            link,
        };
        self.flows.update(&self.id, |v| {
            *v = FlowView::Authorizing {
                url: None,
                device: Some(device),
            }
        });
    }

    fn note(&self, message: &str) {
        tracing::info!(server = %self.id, "{message}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finished_flows_are_capped_and_running_ones_kept() {
        let flows = Flows::default();
        flows.set("running", FlowView::Starting);
        for i in 0..(KEEP_FINISHED + 10) {
            flows.set(
                &format!("s{i}"),
                FlowView::Failed {
                    reason: "no".into(),
                },
            );
        }
        let all = flows.all();
        assert_eq!(all.len(), KEEP_FINISHED + 1);
        assert!(all.contains_key("running"));
        assert!(
            !all.contains_key("s0"),
            "the oldest finished flow goes first"
        );
        assert!(flows.any_running());
    }

    #[test]
    fn a_finished_flow_is_not_changed_by_a_late_report() {
        let flows = Flows::default();
        flows.set("a", FlowView::Starting);
        let w = flows.witness("a");
        w.device_code("javascript:alert(1)", None, "ABCD-EFGH");
        let Some(FlowView::Authorizing {
            device: Some(d), ..
        }) = flows.get("a")
        else {
            panic!("the device code is shown");
        };
        assert_eq!(d.link, None, "a javascript: URL is never a link");
        flows.set(
            "a",
            FlowView::Declined {
                reason: "authorization was declined".into(),
            },
        );
        w.device_code("https://as.example/device", None, "ZZZZ");
        assert!(matches!(flows.get("a"), Some(FlowView::Declined { .. })));
    }

    #[test]
    fn declines_are_told_apart_from_failures() {
        assert!(matches!(
            FlowView::from_error(&AuthError::Callback(Refusal::Declined)),
            FlowView::Declined { .. }
        ));
        assert!(matches!(
            FlowView::from_error(&AuthError::Config("x".into())),
            FlowView::Failed { .. }
        ));
    }
}
