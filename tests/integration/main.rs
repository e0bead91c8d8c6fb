//! Integration tests: the real server over real gRPC connections.

mod actors;
mod auth;
mod batch_get;
mod compat;
mod compression;
mod connections;
mod deadlines;
mod durability;
mod echo;
mod export;
mod filter;
mod grey;
// The harness shared with the benchmarks: each uses part of it.
#[allow(dead_code)]
#[path = "../support/mod.rs"]
mod helpers;
mod list;
mod malformed;
mod metrics;
pub mod oidc;
mod raw;
mod readme;
mod replicas;
mod rules;
mod server;
mod slow_bodies;
mod snapshots;
mod sqlite;
mod stream_rights;
mod streams;
mod tls;
mod traces;
mod userctl;
mod users;
mod watch;
mod web;
