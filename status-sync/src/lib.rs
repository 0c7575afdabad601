//! stub
pub mod calls;
