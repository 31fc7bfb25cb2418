//! Records through the ingest queue on moto SQS into the store by the ingest handler:
//! a poison message and a message delivered twice among them.

mod common;

use aws_sdk_sqs::types::MessageSystemAttributeName;
use std::sync::atomic::{AtomicUsize, Ordering};
use wharf_aws::bootstrap::bootstrap;
use wharf_aws::ingest::SqsIngestQueue;
use wharf_core::domain::QueueMessage;
use wharf_core::domain::RawRecord;
use wharf_core::ports::{ChangeLog, Notifier};
use wharf_core::{SourceId, VendorId};
use wharf_local::{Db, Durability, SqliteStore};
use wharf_workers::ingest::handle;

#[derive(Default)]
struct CountingNotifier(AtomicUsize);

#[async_trait::async_trait]
impl Notifier for CountingNotifier {
    fn raw_appended(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
    fn outputs_appended(&self) {}
    fn feed_appended(&self, _: &wharf_core::FeedId) {}
    async fn feed_changed(&self, _: &wharf_core::FeedId, timeout: std::time::Duration) {
        tokio::time::sleep(timeout).await;
    }
}

fn records(n: usize) -> Vec<RawRecord> {
    let now = time::OffsetDateTime::now_utc();
    let (tenant, source) = (VendorId::new(), SourceId::new());
    (0..n)
        .map(|i| RawRecord {
            id: RawRecord::id_for(&source, &format!("r{i}")),
            tenant_id: tenant.clone(),
            source_id: source.clone(),
            external_id: Some(format!("r{i}")),
            ts: now,
            received_at: now,
            expires_at: now + time::Duration::days(7),
            data: serde_json::json!({ "i": i, "note": "x".repeat(1000) }),
        })
        .collect()
}

#[tokio::test]
async fn queued_records_are_stored_once_and_a_poison_message_fails_alone() {
    let clients = common::clients().await;
    let queues = bootstrap(&clients).await.expect("bootstrap");
    let queue = SqsIngestQueue::new(&clients, &queues.ingest_queue_url);

    // 1000 records of ~1.2 KiB: several messages, each as full as a message can be.
    let sent = records(1000);
    let messages = queue.send(&sent).await.expect("send");
    assert!(messages >= 4, "{messages} messages");
    let batch_calls = clients.calls.operation("SendMessageBatch");
    // Each full message is nearly 256 KiB, a call's whole allowance: one message per call.
    assert_eq!(batch_calls, messages as u64);
    clients
        .sqs
        .send_message()
        .queue_url(&queues.ingest_queue_url)
        .message_body("this is not an ingest message")
        .send()
        .await
        .expect("poison");

    // Receive everything; the first message is handed over twice, as SQS may do.
    let mut received = Vec::new();
    while received.len() < messages + 1 {
        let page = clients
            .sqs
            .receive_message()
            .queue_url(&queues.ingest_queue_url)
            .max_number_of_messages(10)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .send()
            .await
            .expect("receive");
        assert!(
            !page.messages().is_empty(),
            "queue ran dry at {}",
            received.len()
        );
        received.extend(page.messages().iter().map(|m| QueueMessage {
            id: m.message_id().unwrap_or_default().to_owned(),
            queue: "ingest".into(),
            body: m.body().unwrap_or_default().to_owned(),
            sent_at: None,
            attributes: Default::default(),
            receipt: None,
        }));
    }
    let poison_id = received
        .iter()
        .find(|m| m.body.starts_with("this is"))
        .map(|m| m.id.clone())
        .expect("poison received");
    let first_again = received
        .iter()
        .find(|m| !m.body.starts_with("this is"))
        .cloned()
        .expect("a record message");
    received.push(first_again.clone());

    let dir = tempfile::tempdir().expect("temp dir");
    let store =
        SqliteStore::new(Db::open(&dir.path().join("w.db"), Durability::Normal).expect("db"));
    let notifier = CountingNotifier::default();
    let done = handle(&store, &notifier, &received).await;
    assert_eq!(done.outcome.failed, vec![poison_id]);
    assert_eq!(done.new, 1000);
    let first_len = wharf_core::ingest_queue::unpack(&first_again.body)
        .expect("unpack")
        .len();
    assert_eq!(done.duplicates, first_len);
    assert_eq!(notifier.0.load(Ordering::SeqCst), 1);

    // Stored once each, in order of arrival within their messages.
    let stored = store.raw_after(0, 5000).await.expect("read");
    assert_eq!(stored.len(), 1000);
    let mut ids: Vec<_> = stored.iter().map(|(_, r)| r.id.clone()).collect();
    ids.sort();
    let mut want: Vec<_> = sent.iter().map(|r| r.id.clone()).collect();
    want.sort();
    assert_eq!(ids, want);

    // Handling the whole batch again stores nothing new.
    let again = handle(&store, &notifier, &received).await;
    assert_eq!((again.new, again.duplicates), (0, 1000 + first_len));
    assert_eq!(
        again.outcome.failed.len(),
        1,
        "the poison message fails again"
    );
}
