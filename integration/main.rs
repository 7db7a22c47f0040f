//! Integration tests: real docker-registry, slapd and the gate on loopback.
//!
//! One test binary (see Cargo.toml). Each test starts its own servers as
//! child processes on ports chosen at run time and stops them by PID.

mod harness;

mod catalog;
mod clients;
mod core;
mod credentials;
mod fidelity;
mod fleet;
mod hardening;
mod ldap;
mod ldap_backend;
mod oidc;
mod operations;
mod tags;
mod ui;
mod ui_tokens;
