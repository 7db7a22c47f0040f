//! registry-gate: authentication and authorization in front of an open
//! Docker/OCI registry.
#![forbid(unsafe_code)]

pub mod access;
pub mod authn;
pub mod authz;
pub mod config;
pub mod scope;
pub mod secret;
pub mod token;
