//! Integration tests: real docker-registry, slapd and the gate on loopback.
