//! The types orderhub hands to a restaurant backend, in a crate of their
//! own so that a backend written in Rust can use them without the hub.
//!
//! - [`order`]: the canonical order (`orderhub.order.v1`), its JSON shape
//!   and the rules every order the hub publishes satisfies; the JSON Schema
//!   generated from these types is committed at `canonical/schema/`.
//! - [`money`]: exact amounts in minor units and ISO 4217 currencies; decimal
//!   provider amounts parsed from their literal text, never through a float.
//! - [`provider`]: the one registry of providers every seam matches on.
//! - [`status`]: the way back: the backend's status request, the status
//!   command the hub stores, and the failure report a `status_failed`
//!   event carries.
//!
//! Contract: the JSON names never change within `orderhub.order.v1`; new
//! fields are optional, so older readers and writers keep working.

pub mod money;
pub mod order;
pub mod provider;
pub mod status;

pub use provider::Provider;
