//! The `keyway` binary, run as a user would run it. Each test gets its own home.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod call;
mod crash;
mod demo;
mod dpop;
mod errors;
mod everyday;
mod generations;
mod harness;
mod hygiene;
mod legacy;
mod lifecycle;
mod postgres;
mod profiles;
mod proxy;
mod proxy_url;
mod race;
mod replicas;
mod security;
mod serve;
mod serve_generations;
mod servers;
mod testbed;
mod tls;
mod tools;
mod usage;
