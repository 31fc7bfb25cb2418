//! Idempotency keys (`IdempotencyStore`).

use crate::support::*;

/// A key never seen is reserved: `Started`.
pub async fn a_new_idempotency_key_starts(store: &dyn Store) {
    let scope = nonce();
    assert_eq!(
        store.begin(&scope, "k1", "fp", at(0)).await.unwrap(),
        IdempotencyState::Started
    );
}

/// After `complete`, the same request gets the stored response back, every time.
pub async fn a_completed_idempotency_key_replays_its_response(store: &dyn Store) {
    let scope = nonce();
    let response = StoredResponse {
        status: 201,
        body: br#"{"id":"feed_1"}"#.to_vec(),
    };
    assert_eq!(
        store.begin(&scope, "k", "fp", at(0)).await.unwrap(),
        IdempotencyState::Started
    );
    store.complete(&scope, "k", &response).await.unwrap();
    for _ in 0..2 {
        assert_eq!(
            store.begin(&scope, "k", "fp", at(10)).await.unwrap(),
            IdempotencyState::Completed(response.clone())
        );
    }
    let empty = StoredResponse {
        status: 204,
        body: vec![],
    };
    assert_eq!(
        store.begin(&scope, "empty", "fp", at(0)).await.unwrap(),
        IdempotencyState::Started
    );
    store.complete(&scope, "empty", &empty).await.unwrap();
    assert_eq!(
        store.begin(&scope, "empty", "fp", at(1)).await.unwrap(),
        IdempotencyState::Completed(empty)
    );
}

/// A key used with another request body conflicts, whether that request finished or not.
pub async fn an_idempotency_key_reused_with_another_request_conflicts(store: &dyn Store) {
    let scope = nonce();
    assert_eq!(
        store.begin(&scope, "k", "fp-a", at(0)).await.unwrap(),
        IdempotencyState::Started
    );
    assert_eq!(
        store.begin(&scope, "k", "fp-b", at(1)).await.unwrap(),
        IdempotencyState::Conflict
    );
    let response = StoredResponse {
        status: 201,
        body: b"a".to_vec(),
    };
    store.complete(&scope, "k", &response).await.unwrap();
    assert_eq!(
        store.begin(&scope, "k", "fp-b", at(2)).await.unwrap(),
        IdempotencyState::Conflict
    );
    assert_eq!(
        store.begin(&scope, "k", "fp-a", at(3)).await.unwrap(),
        IdempotencyState::Completed(response)
    );
}

/// The same request again while the first is still running conflicts.
pub async fn an_idempotency_key_in_progress_conflicts(store: &dyn Store) {
    let scope = nonce();
    assert_eq!(
        store.begin(&scope, "k", "fp", at(0)).await.unwrap(),
        IdempotencyState::Started
    );
    assert_eq!(
        store.begin(&scope, "k", "fp", at(1)).await.unwrap(),
        IdempotencyState::Conflict
    );
}

/// A reservation older than the timeout belongs to a request that died; the same request
/// may take it over, another body still conflicts.
pub async fn a_stale_idempotency_reservation_is_taken_over(store: &dyn Store) {
    let scope = nonce();
    let timeout = wharf_core::ports::IDEMPOTENCY_RESERVATION_TIMEOUT.as_secs() as i64;
    assert_eq!(
        store.begin(&scope, "k", "fp", at(0)).await.unwrap(),
        IdempotencyState::Started
    );
    assert_eq!(
        store
            .begin(&scope, "k", "fp", at(timeout - 1))
            .await
            .unwrap(),
        IdempotencyState::Conflict
    );
    assert_eq!(
        store
            .begin(&scope, "k", "other", at(timeout + 1))
            .await
            .unwrap(),
        IdempotencyState::Conflict
    );
    assert_eq!(
        store
            .begin(&scope, "k", "fp", at(timeout + 1))
            .await
            .unwrap(),
        IdempotencyState::Started
    );
    assert_eq!(
        store
            .begin(&scope, "k", "fp", at(timeout + 2))
            .await
            .unwrap(),
        IdempotencyState::Conflict
    );
}

/// `abandon` releases a reservation so the key can start again, with any body.
pub async fn abandoning_an_idempotency_key_frees_it(store: &dyn Store) {
    let scope = nonce();
    assert_eq!(
        store.begin(&scope, "k", "fp-a", at(0)).await.unwrap(),
        IdempotencyState::Started
    );
    store.abandon(&scope, "k").await.unwrap();
    assert_eq!(
        store.begin(&scope, "k", "fp-b", at(1)).await.unwrap(),
        IdempotencyState::Started
    );
    let response = StoredResponse {
        status: 200,
        body: b"b".to_vec(),
    };
    store.complete(&scope, "k", &response).await.unwrap();
    assert_eq!(
        store.begin(&scope, "k", "fp-b", at(2)).await.unwrap(),
        IdempotencyState::Completed(response)
    );
}

/// The same key in two scopes (two callers) is two keys.
pub async fn idempotency_keys_are_separate_per_scope(store: &dyn Store) {
    let (mine, theirs) = (nonce(), nonce());
    assert_eq!(
        store.begin(&mine, "k", "fp", at(0)).await.unwrap(),
        IdempotencyState::Started
    );
    assert_eq!(
        store.begin(&theirs, "k", "other", at(0)).await.unwrap(),
        IdempotencyState::Started
    );
    let response = StoredResponse {
        status: 201,
        body: b"mine".to_vec(),
    };
    store.complete(&mine, "k", &response).await.unwrap();
    assert_eq!(
        store.begin(&theirs, "k", "other", at(1)).await.unwrap(),
        IdempotencyState::Conflict
    );
    assert_eq!(
        store.begin(&mine, "k", "fp", at(1)).await.unwrap(),
        IdempotencyState::Completed(response)
    );
}

/// A key older than a day starts anew whatever it stored, and expiring keys reserved before
/// a time leaves newer ones.
pub async fn an_idempotency_key_older_than_a_day_starts_anew(store: &dyn Store) {
    let scope = nonce();
    let kept = wharf_core::ports::IDEMPOTENCY_KEPT.as_secs() as i64;
    let response = StoredResponse {
        status: 201,
        body: br#"{"id":"old"}"#.to_vec(),
    };
    assert_eq!(
        store.begin(&scope, "k", "fp", at(0)).await.unwrap(),
        IdempotencyState::Started
    );
    store.complete(&scope, "k", &response).await.unwrap();
    assert_eq!(
        store.begin(&scope, "k", "fp", at(kept - 10)).await.unwrap(),
        IdempotencyState::Completed(response)
    );
    assert_eq!(
        store
            .begin(&scope, "k", "another", at(kept + 10))
            .await
            .unwrap(),
        IdempotencyState::Started,
        "a day later the key is new, even for another request"
    );
    assert_eq!(
        store
            .begin(&scope, "fresh", "fp", at(kept + 20))
            .await
            .unwrap(),
        IdempotencyState::Started
    );
    store.expire_idempotency(at(kept + 15)).await.unwrap();
    assert_eq!(
        store
            .begin(&scope, "fresh", "fp", at(kept + 30))
            .await
            .unwrap(),
        IdempotencyState::Conflict,
        "a reservation newer than the cut is kept"
    );
}
