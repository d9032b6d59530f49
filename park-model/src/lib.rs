//! Domain types of a park (buildings, spaces, enterprises, leases, credentials, passes,
//! tariffs) and the pure decision logic over them.
//!
//! This crate does no IO, reads no clock and spawns nothing: time and input are arguments.
//! It holds nothing yet; the business documents and decisions arrive with the access and
//! parking work.
