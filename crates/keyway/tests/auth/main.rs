//! keyway's authorization against real testbeds on loopback: the flows, and hostile
//! servers that must end in a clear error with no token sent where it should not go.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod dpop;
mod flows;
mod gateway;
mod harness;
mod hostile;
mod profiles;
