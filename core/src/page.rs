//! Cursor pagination. A cursor is opaque to callers: each store encodes its own position
//! (an id for SQLite, a `LastEvaluatedKey` for DynamoDB).

use serde::{Deserialize, Serialize};

/// The largest page a caller may ask for.
pub const MAX_LIMIT: u32 = 200;
/// The page size when none is asked for.
pub const DEFAULT_LIMIT: u32 = 50;

/// Which page to read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PageRequest {
    /// At most this many items (clamped to `1..=MAX_LIMIT`).
    pub limit: u32,
    /// Where the previous page stopped, as returned in its `next_cursor`.
    pub cursor: Option<String>,
}

impl PageRequest {
    /// A request for the first page of `limit` items.
    pub fn first(limit: u32) -> Self {
        PageRequest {
            limit,
            cursor: None,
        }
    }

    /// The limit, clamped to the allowed range.
    pub fn limit(&self) -> usize {
        match self.limit {
            0 => DEFAULT_LIMIT as usize,
            n => n.min(MAX_LIMIT) as usize,
        }
    }
}

/// One page of a list.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Page<T> {
    /// The items of this page, in the list's order.
    pub items: Vec<T>,
    /// Pass this as `cursor` to read the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// A list with nothing in it.
    pub fn empty() -> Page<T> {
        Page {
            items: Vec::new(),
            next_cursor: None,
        }
    }

    /// Converts the items, keeping the cursor.
    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        Page {
            items: self.items.into_iter().map(f).collect(),
            next_cursor: self.next_cursor,
        }
    }
}
