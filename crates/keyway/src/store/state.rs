//! Pending authorization flows: keyed by a hash of `state` (the state itself is a
//! CSRF secret), sealed, forgotten after ten minutes.

use std::time::Duration;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use sha2::{Digest, Sha256};

/// How long a pending flow stays usable (seed: abandoned after 10 minutes).
pub const PENDING_FLOW_TTL: Duration = Duration::from_secs(600);

pub(crate) fn state_hash(state: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(state.as_bytes()))
}
