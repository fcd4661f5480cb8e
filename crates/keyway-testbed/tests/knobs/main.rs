//! Every testbed knob, exercised over raw HTTP.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod dpop;
mod faults;
mod fixture;
mod flow;
mod grants;
mod harness;
mod hostile;
mod idp_quirks;
mod jwt_access_tokens;
mod listeners;
mod mcp;
mod metadata;
mod private_key_jwt;
mod registration;
mod subjects;
mod tokens;
