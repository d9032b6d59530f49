//! The sessions of both sides on a virtual network: scenario tests, the property test over
//! random faults and workloads, and document convergence through automerge. See
//! `harness.rs` for the world they run in.

mod documents;
mod faults;
mod harness;
mod scenarios;
