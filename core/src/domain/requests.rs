//! Bookkeeping of API requests: the answers stored for idempotency keys.

/// A response stored for an `Idempotency-Key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    /// HTTP status.
    pub status: u16,
    /// Response body.
    pub body: Vec<u8>,
}

/// What `begin` found for a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdempotencyState {
    /// The key is new and now reserved for this request.
    Started,
    /// The same request already completed; replay this response.
    Completed(StoredResponse),
    /// The key was used with another request body, or that request is still running.
    Conflict,
}
