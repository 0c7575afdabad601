//! orderhub's ingress: the HTTP edge that receives order webhooks from
//! delivery providers, checks that each really comes from the provider and
//! account its URL names, and hands the raw request on to JetStream.
//!
//! [`verify`] verifies provider signatures: one scheme per provider, on the
//! exact raw body, before anything parses it.

pub mod verify;
