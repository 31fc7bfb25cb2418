//! The `Store` port on one DynamoDB table, following the key design in this crate's README.
//!
//! Each entity is one item holding its JSON (`doc`) beside the key attributes, a `kind` and
//! the few attributes that conditions and filters need. Invariants:
//! - every tenant-owned item's partition key begins with `T#{tenant}`, and reads by a
//!   tenant build the key from that tenant, so another tenant's object reads, updates and
//!   deletes exactly like a missing one (`NotFound`);
//! - uniqueness, revisions and exactly-once changes are conditions on the write itself;
//! - lists are ordered by sort key (ids are UUIDv7, so creation order), and a cursor is the
//!   opaque encoding of the last item's key.

mod accounts;
mod billing;
mod catalog;
mod deliveries;
mod fanout;
mod models;
mod packs;
mod parts;
mod records;
mod stream;
mod subscriptions;
mod usage;

pub use packs::{packed_part, part_records_of};
pub use records::PART_BYTES;
pub use stream::change_of;

use crate::table::{decode_cursor, encode_cursor};
use crate::{Clients, aws_error};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeValue, DeleteRequest, KeysAndAttributes, PutRequest, TransactWriteItem, WriteRequest,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use wharf_core::ports::{Result, Store};
use wharf_core::{CoreError, Page, PageRequest, Timestamp};

/// One DynamoDB item.
pub(crate) type Item = HashMap<String, AttributeValue>;

/// Items per `TransactWriteItems` call (DynamoDB's limit).
const TRANSACTION_ITEMS: usize = 100;
/// Keys per `BatchGetItem` call (DynamoDB's limit).
const BATCH_GET_KEYS: usize = 100;

/// Every store port on DynamoDB.
#[derive(Debug, Clone)]
pub struct DynamoStore {
    clients: Clients,
}

impl DynamoStore {
    /// A store on the table named in `clients.settings` (created by `wharf aws bootstrap`).
    pub fn new(clients: Clients) -> Self {
        DynamoStore { clients }
    }

    /// The clients the store calls through (and their call counts).
    pub fn clients(&self) -> &Clients {
        &self.clients
    }

    fn table(&self) -> &str {
        &self.clients.settings.table
    }

    fn db(&self) -> &aws_sdk_dynamodb::Client {
        &self.clients.dynamodb
    }

    /// The item at (`pk`, `sk`), read consistently.
    async fn get(&self, pk: &str, sk: &str) -> Result<Option<Item>> {
        Ok(self
            .db()
            .get_item()
            .table_name(self.table())
            .key("pk", s(pk))
            .key("sk", s(sk))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| aws_error("reading an item", e))?
            .item)
    }

    /// The `doc` of the item at (`pk`, `sk`), or `NotFound(what)`.
    async fn get_doc<T: DeserializeOwned>(
        &self,
        pk: &str,
        sk: &str,
        what: &'static str,
    ) -> Result<T> {
        match self.get(pk, sk).await? {
            Some(item) => from_item(&item),
            None => Err(CoreError::NotFound(what)),
        }
    }

    /// Stores `item` unless its key is taken; a taken key is `Conflict("{what} already exists")`.
    async fn put_new(&self, item: Item, what: &str) -> Result<()> {
        let sent = self
            .db()
            .put_item()
            .table_name(self.table())
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await;
        if written(sent, "storing an item")? {
            Ok(())
        } else {
            Err(CoreError::Conflict(format!("{what} already exists")))
        }
    }

    /// Replaces the item at `item`'s key if there is one; `NotFound(what)` otherwise.
    async fn put_existing(&self, item: Item, what: &'static str) -> Result<()> {
        let sent = self
            .db()
            .put_item()
            .table_name(self.table())
            .set_item(Some(item))
            .condition_expression("attribute_exists(pk)")
            .send()
            .await;
        if written(sent, "replacing an item")? {
            Ok(())
        } else {
            Err(CoreError::NotFound(what))
        }
    }

    /// Stores `items`, replacing what is there, in batches (`BatchWriteItem`).
    async fn put_all(&self, items: Vec<Item>) -> Result<()> {
        let requests = items
            .into_iter()
            .map(|item| {
                Ok(WriteRequest::builder()
                    .put_request(
                        PutRequest::builder()
                            .set_item(Some(item))
                            .build()
                            .map_err(CoreError::internal)?,
                    )
                    .build())
            })
            .collect::<Result<Vec<_>>>()?;
        crate::table::batch_write(&self.clients, self.table(), requests).await?;
        Ok(())
    }

    /// Stores `item`, replacing what is there.
    async fn put(&self, item: Item) -> Result<()> {
        self.db()
            .put_item()
            .table_name(self.table())
            .set_item(Some(item))
            .send()
            .await
            .map_err(|e| aws_error("storing an item", e))?;
        Ok(())
    }

    /// Deletes the item at (`pk`, `sk`) if it is there.
    async fn delete(&self, pk: &str, sk: &str) -> Result<()> {
        self.db()
            .delete_item()
            .table_name(self.table())
            .key("pk", s(pk))
            .key("sk", s(sk))
            .send()
            .await
            .map_err(|e| aws_error("deleting an item", e))?;
        Ok(())
    }

    /// Runs one transaction: `Ok(None)` when it committed, `Ok(Some(codes))` with one
    /// cancellation code per item (`"None"` for items that were fine) when a condition failed.
    async fn transact(&self, items: Vec<TransactWriteItem>) -> Result<Option<Vec<String>>> {
        let sent = self
            .db()
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await;
        match sent {
            Ok(_) => Ok(None),
            Err(e) => match e.as_service_error() {
                Some(TransactWriteItemsError::TransactionCanceledException(t))
                    if t.cancellation_reasons()
                        .iter()
                        .any(|r| r.code() == Some("ConditionalCheckFailed")) =>
                {
                    Ok(Some(
                        t.cancellation_reasons()
                            .iter()
                            .map(|r| r.code().unwrap_or("None").to_owned())
                            .collect(),
                    ))
                }
                _ => Err(aws_error("writing a transaction", e)),
            },
        }
    }

    /// Writes groups of items, each group atomically and only if its first item's condition
    /// holds (a group whose first item fails is skipped, as a duplicate). Groups share
    /// transactions of up to 100 items; when one is cancelled, the groups that failed are
    /// dropped and the rest written again. Answers, per group, whether it was written.
    async fn write_new_groups(&self, groups: Vec<Vec<TransactWriteItem>>) -> Result<Vec<bool>> {
        let mut written = vec![false; groups.len()];
        let mut batch: Vec<(usize, Vec<TransactWriteItem>)> = Vec::new();
        let mut size = 0;
        for (index, group) in groups.into_iter().enumerate() {
            if group.len() > TRANSACTION_ITEMS {
                return Err(CoreError::internal(
                    "a write group larger than a transaction",
                ));
            }
            if size + group.len() > TRANSACTION_ITEMS {
                for i in self.write_group_batch(std::mem::take(&mut batch)).await? {
                    written[i] = true;
                }
                size = 0;
            }
            size += group.len();
            batch.push((index, group));
        }
        if !batch.is_empty() {
            for i in self.write_group_batch(batch).await? {
                written[i] = true;
            }
        }
        Ok(written)
    }

    /// Writes one transaction's groups; answers the indexes of those written.
    async fn write_group_batch(
        &self,
        mut batch: Vec<(usize, Vec<TransactWriteItem>)>,
    ) -> Result<Vec<usize>> {
        while !batch.is_empty() {
            let flat: Vec<TransactWriteItem> =
                batch.iter().flat_map(|(_, g)| g.iter().cloned()).collect();
            let Some(codes) = self.transact(flat).await? else {
                return Ok(batch.into_iter().map(|(i, _)| i).collect());
            };
            let mut offset = 0;
            let mut kept = Vec::with_capacity(batch.len());
            for (index, group) in batch {
                let failed = codes
                    .get(offset..offset + group.len())
                    .is_some_and(|c| c.iter().any(|c| c == "ConditionalCheckFailed"));
                offset += group.len();
                if !failed {
                    kept.push((index, group));
                }
            }
            batch = kept;
        }
        Ok(Vec::new())
    }

    /// The items at `keys`, read consistently, keyed by (pk, sk); missing ones are absent.
    async fn batch_get(
        &self,
        keys: Vec<(String, String)>,
    ) -> Result<HashMap<(String, String), Item>> {
        let mut found = HashMap::new();
        let mut unique = keys;
        unique.sort();
        unique.dedup();
        for chunk in unique.chunks(BATCH_GET_KEYS) {
            let mut pending: Vec<Item> = chunk
                .iter()
                .map(|(pk, sk)| HashMap::from([("pk".to_owned(), s(pk)), ("sk".to_owned(), s(sk))]))
                .collect();
            let mut attempt = 0u32;
            while !pending.is_empty() {
                attempt += 1;
                if attempt > 8 {
                    return Err(CoreError::unavailable(
                        "keys still unprocessed after 8 reads",
                    ));
                }
                let answer = self
                    .db()
                    .batch_get_item()
                    .request_items(
                        self.table(),
                        KeysAndAttributes::builder()
                            .set_keys(Some(pending))
                            .consistent_read(true)
                            .build()
                            .map_err(CoreError::internal)?,
                    )
                    .send()
                    .await
                    .map_err(|e| aws_error("reading items", e))?;
                for item in answer
                    .responses
                    .and_then(|mut r| r.remove(self.table()))
                    .unwrap_or_default()
                {
                    found.insert(
                        (
                            str_attr(&item, "pk")?.to_owned(),
                            str_attr(&item, "sk")?.to_owned(),
                        ),
                        item,
                    );
                }
                pending = answer
                    .unprocessed_keys
                    .and_then(|mut u| u.remove(self.table()))
                    .map(|k| k.keys)
                    .unwrap_or_default();
            }
        }
        Ok(found)
    }

    /// Reads one page of `query`, keeping the items `keep` keeps (it sees each batch DynamoDB
    /// answers and may look things up). Pages hold exactly `limit` items unless they are the
    /// last, and the last has no cursor.
    async fn query_page<'a, F>(
        &'a self,
        query: &Query,
        page: &PageRequest,
        mut keep: F,
    ) -> Result<Page<Item>>
    where
        F: FnMut(Vec<Item>) -> Kept<'a> + Send,
    {
        let limit = page.limit();
        let key_names = query.key_names();
        let mut start = page
            .cursor
            .as_deref()
            .map(|c| decode_cursor(c, &key_names))
            .transpose()?;
        let mut items: Vec<Item> = Vec::new();
        loop {
            let want = limit + 1 - items.len();
            let (batch, next) = self.query_once(query, start, Some(want)).await?;
            items.extend(keep(batch).await?);
            match next {
                Some(next) if items.len() <= limit => start = Some(next),
                _ => break,
            }
        }
        let more = items.len() > limit;
        items.truncate(limit);
        let next_cursor = match items.last() {
            Some(last) if more => {
                let key: Item = key_names
                    .iter()
                    .filter_map(|n| last.get(*n).map(|v| ((*n).to_owned(), v.clone())))
                    .collect();
                Some(encode_cursor(&key)?)
            }
            _ => None,
        };
        Ok(Page { items, next_cursor })
    }

    /// Every item `query` matches, up to `max` when given.
    async fn query_all(&self, query: &Query, max: Option<usize>) -> Result<Vec<Item>> {
        let mut items = Vec::new();
        let mut start = None;
        loop {
            let want = max.map(|m| m - items.len());
            let (batch, next) = self.query_once(query, start, want).await?;
            items.extend(batch);
            if max.is_some_and(|m| items.len() >= m) {
                break;
            }
            match next {
                Some(next) => start = Some(next),
                None => break,
            }
        }
        Ok(items)
    }

    async fn query_once(
        &self,
        query: &Query,
        start: Option<Item>,
        limit: Option<usize>,
    ) -> Result<(Vec<Item>, Option<Item>)> {
        let (pk_name, sk_name) = query.key_attributes();
        let mut request = self
            .db()
            .query()
            .table_name(self.table())
            .set_index_name(query.index.map(str::to_owned))
            .expression_attribute_names("#p", pk_name)
            .expression_attribute_values(":p", s(&query.pk))
            .scan_index_forward(!query.newest_first)
            .set_exclusive_start_key(start)
            .consistent_read(query.index.is_none());
        if let Some(limit) = limit {
            request =
                request.limit(i32::try_from(limit.clamp(1, 1000)).map_err(CoreError::internal)?);
        }
        let condition = match &query.sort {
            None => "#p = :p".to_owned(),
            Some(sort) => {
                request = request.expression_attribute_names("#s", sk_name);
                match sort {
                    Sort::BeginsWith(v) => {
                        request = request.expression_attribute_values(":a", s(v));
                        "#p = :p AND begins_with(#s, :a)".to_owned()
                    }
                    Sort::Between(a, b) => {
                        request = request
                            .expression_attribute_values(":a", s(a))
                            .expression_attribute_values(":b", s(b));
                        "#p = :p AND #s BETWEEN :a AND :b".to_owned()
                    }
                    Sort::After(v) => {
                        request = request.expression_attribute_values(":a", s(v));
                        "#p = :p AND #s > :a".to_owned()
                    }
                    Sort::AtMost(v) => {
                        request = request.expression_attribute_values(":a", s(v));
                        "#p = :p AND #s <= :a".to_owned()
                    }
                }
            }
        };
        let answer = request
            .key_condition_expression(condition)
            .send()
            .await
            .map_err(|e| aws_error("querying the table", e))?;
        Ok((answer.items.unwrap_or_default(), answer.last_evaluated_key))
    }

    /// Deletes every item a scan with `filter` finds, in batches; returns how many of them
    /// `counted` counts. `values` fill the filter's placeholders.
    async fn scan_delete(
        &self,
        filter: &str,
        values: Vec<(&str, AttributeValue)>,
        mut counted: impl FnMut(&Item) -> bool,
    ) -> Result<usize> {
        let mut start = None;
        let mut count = 0;
        loop {
            let mut request = self
                .db()
                .scan()
                .table_name(self.table())
                .filter_expression(filter)
                .projection_expression("pk, sk, #kind, pos, first_pos, n_records")
                .expression_attribute_names("#kind", "kind")
                .set_exclusive_start_key(start);
            for (name, value) in &values {
                request = request.expression_attribute_values(*name, value.clone());
            }
            let answer = request
                .send()
                .await
                .map_err(|e| aws_error("scanning the table", e))?;
            let items = answer.items.unwrap_or_default();
            count += items.iter().filter(|i| counted(i)).count();
            let deletes = items
                .iter()
                .map(|item| {
                    let key: Item = ["pk", "sk"]
                        .iter()
                        .filter_map(|n| item.get(*n).map(|v| ((*n).to_owned(), v.clone())))
                        .collect();
                    Ok(WriteRequest::builder()
                        .delete_request(
                            DeleteRequest::builder()
                                .set_key(Some(key))
                                .build()
                                .map_err(CoreError::internal)?,
                        )
                        .build())
                })
                .collect::<Result<Vec<_>>>()?;
            crate::table::batch_write(&self.clients, self.table(), deletes).await?;
            match answer.last_evaluated_key {
                Some(next) => start = Some(next),
                None => return Ok(count),
            }
        }
    }
}

impl Store for DynamoStore {
    fn ping(&self) -> Result<()> {
        // The clients hold no connection to check; a failed call reports itself.
        Ok(())
    }
}

/// A query on the table or one of its indexes.
#[derive(Debug, Clone)]
struct Query {
    /// `None` for the table, else `gsi1`, `gsi2` or `gsi3`.
    index: Option<&'static str>,
    pk: String,
    sort: Option<Sort>,
    newest_first: bool,
}

#[derive(Debug, Clone)]
enum Sort {
    BeginsWith(String),
    Between(String, String),
    After(String),
    AtMost(String),
}

impl Query {
    fn table(pk: impl Into<String>) -> Query {
        Query {
            index: None,
            pk: pk.into(),
            sort: None,
            newest_first: false,
        }
    }

    fn index(index: &'static str, pk: impl Into<String>) -> Query {
        Query {
            index: Some(index),
            ..Query::table(pk)
        }
    }

    fn sort(mut self, sort: Sort) -> Query {
        self.sort = Some(sort);
        self
    }

    fn newest_first(mut self) -> Query {
        self.newest_first = true;
        self
    }

    fn key_attributes(&self) -> (String, String) {
        match self.index {
            None => ("pk".into(), "sk".into()),
            Some(index) => (format!("{index}pk"), format!("{index}sk")),
        }
    }

    /// The attributes of a `LastEvaluatedKey` of this query.
    fn key_names(&self) -> Vec<&'static str> {
        match self.index {
            None => vec!["pk", "sk"],
            Some("gsi1") => vec!["pk", "sk", "gsi1pk", "gsi1sk"],
            Some("gsi2") => vec!["pk", "sk", "gsi2pk", "gsi2sk"],
            Some(_) => vec!["pk", "sk", "gsi3pk", "gsi3sk"],
        }
    }
}

/// Whether a conditional write happened: `false` when its condition failed, an error for any
/// other failure.
fn written<T, E, R>(
    sent: std::result::Result<T, aws_smithy_runtime_api::client::result::SdkError<E, R>>,
    what: &str,
) -> Result<bool>
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match sent {
        Ok(_) => Ok(true),
        Err(e)
            if aws_sdk_dynamodb::error::ProvideErrorMetadata::code(&e)
                == Some("ConditionalCheckFailedException") =>
        {
            Ok(false)
        }
        Err(e) => Err(aws_error(what, e)),
    }
}

pub(crate) fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

pub(crate) fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

/// An item with its key, kind and JSON document.
fn item<T: Serialize>(
    pk: impl Into<String>,
    sk: impl Into<String>,
    kind: &str,
    value: &T,
) -> Result<Item> {
    Ok(HashMap::from([
        ("pk".to_owned(), s(pk)),
        ("sk".to_owned(), s(sk)),
        ("kind".to_owned(), s(kind)),
        (
            "doc".to_owned(),
            s(serde_json::to_string(value).map_err(CoreError::internal)?),
        ),
    ]))
}

fn from_item<T: DeserializeOwned>(item: &Item) -> Result<T> {
    serde_json::from_str(str_attr(item, "doc")?).map_err(CoreError::internal)
}

fn str_attr<'a>(item: &'a Item, name: &str) -> Result<&'a str> {
    item.get(name)
        .and_then(|v| v.as_s().ok())
        .map(String::as_str)
        .ok_or_else(|| CoreError::internal(format!("an item without the string attribute {name}")))
}

fn num_attr(item: &Item, name: &str) -> Result<u64> {
    item.get(name)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| CoreError::internal(format!("an item without the number attribute {name}")))
}

fn docs<T: DeserializeOwned>(page: Page<Item>) -> Result<Page<T>> {
    Ok(Page {
        items: page.items.iter().map(from_item).collect::<Result<_>>()?,
        next_cursor: page.next_cursor,
    })
}

/// Microseconds since the epoch.
fn micros(t: Timestamp) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1000).unwrap_or(i64::MAX)
}

/// A fixed-width key that sorts like the instant, before and after 1970.
fn time_key(t: Timestamp) -> String {
    format!("{:020}", i128::from(micros(t)) + 1_000_000_000_000_000_000)
}

/// The serde name of a unit enum variant (`"published"`), as it appears in documents.
fn label<T: Serialize>(value: &T) -> Result<String> {
    match serde_json::to_value(value).map_err(CoreError::internal)? {
        serde_json::Value::String(s) => Ok(s),
        other => Err(CoreError::internal(format!(
            "expected a string label, got {other}"
        ))),
    }
}

/// What a `query_page` filter answers for one batch: the items it keeps.
type Kept<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Vec<Item>>> + Send + 'a>>;

/// A filter's answer that needs no lookups.
fn ready<'a>(items: Result<Vec<Item>>) -> Kept<'a> {
    Box::pin(std::future::ready(items))
}

/// Passes every item on: `query_page`'s filter when nothing is filtered.
fn keep_all<'a>(items: Vec<Item>) -> Kept<'a> {
    ready(Ok(items))
}

/// A put for a transaction; `new_only` makes it fail when the key is taken.
fn put_op(item: Item, table: &str, new_only: bool) -> Result<TransactWriteItem> {
    let mut put = aws_sdk_dynamodb::types::Put::builder()
        .table_name(table)
        .set_item(Some(item));
    if new_only {
        put = put.condition_expression("attribute_not_exists(pk)");
    }
    Ok(TransactWriteItem::builder()
        .put(put.build().map_err(CoreError::internal)?)
        .build())
}

fn key(pk: impl Into<String>, sk: impl Into<String>) -> Item {
    HashMap::from([("pk".to_owned(), s(pk)), ("sk".to_owned(), s(sk))])
}
