//! user-service: a gRPC user directory on durable embedded storage.
//!
//! Data flows one way: wire (`pb`) -> conversion (`grpc::convert`) -> `domain` -> `storage`,
//! and back. `startup` assembles the server.

#![forbid(unsafe_code)]

pub mod auth;
pub mod call;
pub mod call_deadline;
pub mod caller;
pub mod cli;
pub mod client_address;
pub mod codec;
pub mod config;
pub mod connect;
pub mod connections;
pub mod console;
pub mod contract;
pub mod database_wait;
pub mod domain;
pub mod error;
pub mod files;
pub mod filter;
pub mod grpc;
pub mod health;
pub mod json;
pub mod metrics;
pub mod middleware;
pub mod oidc;
pub mod pb;
pub mod rate;
pub mod shutdown;
pub mod startup;
pub mod storage;
pub mod streams;
pub mod telemetry;
pub mod text;
pub mod timing;
pub mod tokens;
pub mod whole_body;
