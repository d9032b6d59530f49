//! Leasing and billing, the pure parts: lease contracts and their states ([`contract`]),
//! money in fen rounded once per line ([`money`]), months and day ranges ([`period`]),
//! electricity and water tariffs ([`energy`]), the online payment provider's signed messages
//! ([`provider`]), matching bank credits to bills and the ageing of arrears ([`reconcile`]), and what a month's bill run bills for a
//! contract given everything billed before ([`run`]).
//!
//! A wholly rent-free month still gets its rent line, of zero, so that the bill shows why.

pub mod contract;
pub mod energy;
pub mod money;
pub mod period;
pub mod provider;
pub mod reconcile;
pub mod run;
