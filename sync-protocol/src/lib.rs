//! The edge-to-hub sync protocol: wire messages, the codec, and the sans-IO session state
//! machines of both sides.
//!
//! This crate stores nothing and knows no business rules. It holds nothing yet; the sync
//! work fills it.
