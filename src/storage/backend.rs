//! The two backends behind `Store`, and how a call reaches the one in use: SQLite's work on
//! the blocking pool, PostgreSQL's within the operation bound.

use std::sync::Arc;

use super::error::StoreResult;
use super::postgres::PostgresStore;
use super::sqlite::SqliteStore;
use super::writes::{BatchItem, Change, Written};
use crate::domain::UserEvent;

#[derive(Clone)]
pub(super) enum Backend {
    Sqlite(Arc<SqliteStore>),
    Postgres(Arc<PostgresStore>),
}

/// Runs SQLite work on the blocking pool; awaits PostgreSQL's within the operation bound.
macro_rules! on_backend {
    ($backend:expr, $store:ident => $sqlite:expr, $pg:expr) => {
        match $backend {
            Backend::Sqlite($store) => $store.clone().blocking(move |$store| $sqlite).await,
            Backend::Postgres($store) => $store.bounded($pg).await,
        }
    };
}
pub(super) use on_backend;

impl Backend {
    pub(super) async fn create_batch(
        &self,
        items: Vec<BatchItem>,
    ) -> StoreResult<Vec<(usize, StoreResult<UserEvent>)>> {
        on_backend!(self, s => s.create_batch(items), s.create_batch(items))
    }

    pub(super) async fn change_group(
        &self,
        changes: Vec<Change>,
    ) -> StoreResult<Vec<StoreResult<Written>>> {
        on_backend!(self, s => s.change_group(changes), s.change_group(changes))
    }
}

/// Database connections by state.
#[derive(Debug, Clone, Copy)]
pub struct PoolState {
    pub in_use: usize,
    pub idle: usize,
    /// Callers waiting for a connection.
    pub waiting: usize,
}
