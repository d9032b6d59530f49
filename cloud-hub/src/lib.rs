//! The cloud hub: QUIC server for the edges, tenants, billing and dashboards.
//!
//! It holds nothing yet; the sync work brings its first cut.
