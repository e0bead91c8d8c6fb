//! Integration tests: the real server over real gRPC connections.

mod compat;
mod durability;
mod helpers;
mod list;
mod server;
mod snapshots;
mod streams;
mod users;
mod watch;
