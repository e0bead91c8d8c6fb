//! Integration tests: the real server over real gRPC connections.

mod auth;
mod compat;
mod durability;
mod helpers;
mod list;
mod server;
mod snapshots;
mod streams;
mod tls;
mod userctl;
mod users;
mod watch;
