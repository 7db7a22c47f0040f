//! registry-gate: authentication and authorization in front of an open
//! Docker/OCI registry.
#![forbid(unsafe_code)]

pub mod access;
pub mod app;
pub mod audit;
pub mod authn;
pub mod authz;
pub mod config;
pub mod health;
pub mod http;
pub mod immutable;
pub mod iptext;
pub mod listing;
pub mod logformat;
pub mod metrics;
pub mod permit;
pub mod proxyproto;
pub mod ratelimit;
pub mod reload;
pub mod scope;
pub mod secret;
pub mod server;
pub mod store;
pub mod tls;
pub mod token;
pub mod tokens;
pub mod ui;
pub mod upstream;
