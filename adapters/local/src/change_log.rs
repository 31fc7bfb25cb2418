//! The change log over the local store: raw records in the order they were stored (their
//! `position`), read from a position as a whole or per tenant, and the consumers' positions.

use crate::columns::{bound, collect, column, id_column, stored_position, unsigned};
use crate::db::sql_error;
use crate::records::{RAW_AFTER, RAW_OF_TENANT_AFTER, TENANTS_AFTER, decode_raw};
use crate::store::{SqliteStore, run};
use async_trait::async_trait;
use rusqlite::{OptionalExtension, params};
use wharf_core::TenantId;
use wharf_core::domain::RawRecord;
use wharf_core::ports::{ChangeLog, Result};

#[async_trait]
impl ChangeLog for SqliteStore {
    async fn raw_after(&self, after: u64, limit: usize) -> Result<Vec<(u64, RawRecord)>> {
        let (after, limit) = (bound(after), bound(limit));
        self.db
            .read_large(move |c| collect(c, RAW_AFTER, params![after, limit], decode_raw))
            .await
    }

    async fn raw_of_tenant_after(
        &self,
        tenant: &TenantId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, RawRecord)>> {
        let (tenant, after, limit) = (tenant.to_string(), bound(after), bound(limit));
        self.db
            .read_large(move |c| {
                collect(
                    c,
                    RAW_OF_TENANT_AFTER,
                    params![tenant, after, limit],
                    decode_raw,
                )
            })
            .await
    }

    async fn tenants_after(&self, after: u64) -> Result<Vec<(TenantId, u64)>> {
        let after = bound(after);
        self.db
            .read_large(move |c| {
                collect(c, TENANTS_AFTER, params![after], |row| {
                    Ok((id_column(row, 0)?, unsigned(column(row, 1)?)?))
                })
            })
            .await
    }

    async fn consumer_position(&self, consumer: &str) -> Result<u64> {
        self.consumer_value(consumer.to_owned())
            .await?
            .map_or(Ok(0), unsigned)
    }

    async fn set_consumer_position(&self, consumer: &str, position: u64) -> Result<()> {
        self.set_consumer_value(consumer.to_owned(), stored_position(position)?)
            .await
    }
}

impl SqliteStore {
    /// The value a consumer stored: a change-log position, or a window's end in unix
    /// microseconds.
    pub(crate) async fn consumer_value(&self, consumer: String) -> Result<Option<i64>> {
        self.db
            .read(move |c| {
                c.prepare_cached("SELECT position FROM consumer_positions WHERE consumer = ?")
                    .map_err(sql_error)?
                    .query_row([&consumer], |r| r.get(0))
                    .optional()
                    .map_err(sql_error)
            })
            .await
    }

    /// Stores a consumer's value, replacing the one before.
    pub(crate) async fn set_consumer_value(&self, consumer: String, value: i64) -> Result<()> {
        self.db
            .write(move |tx| {
                run(
                    tx,
                    "INSERT INTO consumer_positions (consumer, position) VALUES (?, ?)
                     ON CONFLICT (consumer) DO UPDATE SET position = excluded.position",
                    params![consumer, value],
                )
                .map(|_| ())
            })
            .await
    }
}
