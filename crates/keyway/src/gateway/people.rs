//! Each person's own gateway, behind a team gateway whose servers people authorize
//! as themselves. A person's requests go to a [`Gateway`] of their own, made the
//! first time they come: its upstream connections carry their tokens alone, and what
//! its servers say (notifications, requests) reaches their sessions alone. Where a
//! server needs their authorization, the gateway answers with a link
//! ([`ConnectLinks`]) to the page that starts it ([`super::connect`]).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Instant,
};

use futures::future::BoxFuture;

use super::{Gateway, inbound::Principal};

/// A link where a person authorizes one upstream server as themselves: single use,
/// bound to them, and short-lived.
#[derive(Clone, Debug)]
pub struct ConnectLink {
    /// The page to open in a browser.
    pub url: String,
    /// The id the elicitation carries (not the link's secret).
    pub elicitation_id: String,
}

/// Why no link could be made: said to the person in their tool's answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LinkError {
    /// The person asked for too many links in the last minute.
    #[error(
        "{0} links were made for you in the last minute; open the last one, or call again in a minute"
    )]
    TooMany(usize),
    /// The store did not keep the link (the log says why).
    #[error("the gateway's store did not take it; try again")]
    Store,
}

/// Makes [`ConnectLink`]s for the person behind one [`Gateway`].
pub trait ConnectLinks: Send + Sync {
    /// A link where this person authorizes `server` (a configured server's name);
    /// `None` when `server` is not one each person authorizes. `Err`: why no link
    /// could be made.
    fn link<'a>(&'a self, server: &'a str)
    -> BoxFuture<'a, Option<Result<ConnectLink, LinkError>>>;

    /// Whether `server` is one each person authorizes (its calls may be answered
    /// with a link).
    fn covers(&self, server: &str) -> bool;
}

/// Makes a person's gateway.
pub type Build = Arc<dyn Fn(Principal) -> BoxFuture<'static, Arc<Gateway>> + Send + Sync>;

/// People's gateways kept at once; beyond, the one used longest ago is closed (its
/// person's next request makes it again, and their sessions start again).
pub const MAX_PEOPLE: usize = 1024;

/// The gateways of the people who came, by (issuer, subject).
pub struct People {
    build: Build,
    gateways: Mutex<HashMap<(String, String), Entry>>,
}

struct Entry {
    cell: Arc<tokio::sync::OnceCell<Arc<Gateway>>>,
    used: Instant,
}

impl std::fmt::Debug for People {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("People")
            .field("gateways", &self.gateways().len())
            .finish_non_exhaustive()
    }
}

impl People {
    /// People's gateways made by `build`.
    pub fn new(build: Build) -> Arc<Self> {
        Arc::new(Self {
            build,
            gateways: Mutex::default(),
        })
    }

    fn gateways(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Entry>> {
        self.gateways.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `person`'s gateway, made now if they have none (two first requests at once
    /// make one).
    pub async fn gateway(&self, person: &Principal) -> Arc<Gateway> {
        let (cell, evicted) = {
            let mut all = self.gateways();
            let key = (person.issuer.clone(), person.subject.clone());
            let evicted = if !all.contains_key(&key) && all.len() >= MAX_PEOPLE {
                // Of the gateways made: one still being made is someone's first
                // request, under way.
                let oldest = all
                    .iter()
                    .filter(|(_, e)| e.cell.initialized())
                    .min_by_key(|(_, e)| e.used)
                    .map(|(k, _)| k.clone());
                oldest.and_then(|k| all.remove(&k))
            } else {
                None
            };
            let entry = all.entry(key).or_insert_with(|| Entry {
                cell: Arc::default(),
                used: Instant::now(),
            });
            entry.used = Instant::now();
            (entry.cell.clone(), evicted)
        };
        if let Some(old) = evicted.and_then(|e| e.cell.get().cloned()) {
            tokio::spawn(async move { old.close().await });
        }
        cell.get_or_init(|| (self.build)(person.clone()))
            .await
            .clone()
    }

    /// The gateway of the person `(issuer, subject)`, if they have one now.
    pub fn existing(&self, issuer: &str, subject: &str) -> Option<Arc<Gateway>> {
        self.gateways()
            .get(&(issuer.to_owned(), subject.to_owned()))
            .and_then(|e| e.cell.get().cloned())
    }

    /// Close every person's gateway (the listener is shutting down).
    pub async fn close(&self) {
        let all: Vec<Arc<Gateway>> = self
            .gateways()
            .drain()
            .filter_map(|(_, e)| e.cell.get().cloned())
            .collect();
        futures::future::join_all(all.iter().map(|g| g.close())).await;
    }
}

/// The gateway a request goes to: one for everyone, or each person's own.
#[derive(Clone, Debug)]
pub enum Gateways {
    /// Everyone shares one gateway (the servers' own credentials).
    One(Arc<Gateway>),
    /// Each person has their own ([`People`]).
    People(Arc<People>),
}

impl From<Arc<Gateway>> for Gateways {
    fn from(gw: Arc<Gateway>) -> Self {
        Self::One(gw)
    }
}

impl From<Arc<People>> for Gateways {
    fn from(p: Arc<People>) -> Self {
        Self::People(p)
    }
}

impl Gateways {
    /// The gateway for `caller`'s requests. Each person's gateways need a caller;
    /// the guard puts one on every request (the operator's, without sign-in).
    pub async fn for_caller(&self, caller: Option<&Principal>) -> Arc<Gateway> {
        match (self, caller) {
            (Self::One(gw), _) => gw.clone(),
            (Self::People(p), Some(caller)) => p.gateway(caller).await,
            (Self::People(p), None) => p.gateway(&Principal::operator()).await,
        }
    }

    /// The gateway of the session owner `(issuer, subject)`, if there is one now.
    pub fn of_owner(&self, issuer: &str, subject: &str) -> Option<Arc<Gateway>> {
        match self {
            Self::One(gw) => Some(gw.clone()),
            Self::People(p) => p.existing(issuer, subject),
        }
    }
}
