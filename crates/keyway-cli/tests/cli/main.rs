//! The `keyway` binary, run as a user would run it. Each test gets its own home.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod call;
mod demo;
mod harness;
mod testbed;
mod usage;
