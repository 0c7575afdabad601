//! Every integration test of the hub in one test binary: they share the
//! harness and most of the dependency tree, and one binary links once
//! instead of once per suite. Run one suite with a filter:
//! `cargo nextest run -p orderhub-tests -E 'test(/^soak::/)'` or
//! `cargo test -p orderhub-tests --test integration soak:: -- --nocapture`.

mod auto_accept;
mod cluster;
mod config_live;
mod deploy;
mod devup;
mod e2e;
mod fetcher;
mod identities;
mod ingress;
mod ledger;
mod metrics;
mod ordering;
mod outcomes;
mod soak;
mod status_api;
mod status_sync;
mod streams;
mod tokens;
mod transformer;
mod way_back;
mod worker;
