//! Stand-ins for Lambda's event sources, for `wharf serve --backend aws`: long polls of the
//! ingest and delivery queues, a reader of the table's stream shard by shard, and the
//! schedule on a timer. Each batch becomes the very event Lambda would deliver (built as
//! Lambda's JSON and parsed into the same `aws_lambda_events` types), is decoded by
//! [`crate::lambda`] as on Lambda, and goes to the same [`EventHandlers`]; the
//! partial-failure answer is honoured as Lambda honours it: failed messages are left on the
//! queue to come back (and, after five receives, go to the dead-letter queue); a failed
//! stream record is read again from its sequence number. Stream positions are checkpointed
//! in the data dir after each handled batch, so a restart resumes where it stopped.

use crate::lambda::{self, RETENTION_RULE_SUFFIX};
use crate::{Clients, aws_error};
use aws_sdk_dynamodbstreams::types::{AttributeValue, ShardIteratorType};
use base64::Engine;
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use wharf_core::CoreError;
use wharf_core::domain::BatchOutcome;
use wharf_core::ports::EventHandlers;

const TICK: Duration = Duration::from_millis(500);
const RETENTION_EVERY: Duration = Duration::from_secs(600);
const STREAM_IDLE: Duration = Duration::from_millis(100);
const RETRY_WAIT: Duration = Duration::from_secs(1);
const CHECKPOINT_FILE: &str = "stream-checkpoints.json";

/// The queues the stand-ins poll.
#[derive(Debug, Clone)]
pub struct Queues {
    /// The ingest queue (to the `ingest` handler).
    pub ingest: String,
    /// The delivery queue (to the `sender` handler).
    pub delivery: String,
}

/// Invocations of each handler and the time they took (what Lambda would bill).
#[derive(Debug, Default)]
pub struct Invocations(Mutex<BTreeMap<&'static str, (u64, Duration)>>);

impl Invocations {
    fn record(&self, handler: &'static str, took: Duration) {
        let mut all = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = all.entry(handler).or_default();
        entry.0 += 1;
        entry.1 += took;
    }

    /// Invocations so far and their total time, by handler.
    pub fn snapshot(&self) -> Vec<(&'static str, u64, Duration)> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(name, (n, time))| (*name, *n, *time))
            .collect()
    }
}

/// The running stand-ins.
pub struct StandIns {
    /// Their tasks; aborting them stops the stand-ins.
    pub tasks: Vec<JoinHandle<()>>,
    /// What they invoked.
    pub invocations: Arc<Invocations>,
}

/// The stand-ins, by index into [`Activity`]'s counters.
const STAND_INS: usize = 4;
const INGEST: usize = 0;
const DELIVERY: usize = 1;
const STREAM: usize = 2;
const SCHEDULE: usize = 3;

/// How busy the stand-ins are, for waiting until they are not (tests drive the pipeline to
/// rest with it instead of sleeping).
#[derive(Default)]
pub struct Activity {
    /// Batches handed to a handler.
    handled: AtomicU64,
    /// Rounds that found nothing to hand on, per stand-in (every schedule tick counts).
    quiet: [AtomicU64; STAND_INS],
    /// Whether the schedule runs (a quiet round waits for it only then).
    scheduled: AtomicBool,
    changed: Notify,
}

impl Activity {
    fn handled(&self) {
        self.handled.fetch_add(1, Ordering::SeqCst);
        self.changed.notify_waiters();
    }

    fn quiet(&self, stand_in: usize) {
        self.quiet[stand_in].fetch_add(1, Ordering::SeqCst);
        self.changed.notify_waiters();
    }

    /// Completes once every stand-in has come round twice finding nothing, with no batch
    /// handed to a handler meanwhile (two rounds: one may have begun before work arrived).
    pub async fn until_quiet(&self) {
        loop {
            let handled = self.handled.load(Ordering::SeqCst);
            let start: Vec<u64> = self
                .quiet
                .iter()
                .map(|q| q.load(Ordering::SeqCst))
                .collect();
            loop {
                let changed = self.changed.notified();
                tokio::pin!(changed);
                changed.as_mut().enable();
                let scheduled = self.scheduled.load(Ordering::SeqCst);
                let round = self
                    .quiet
                    .iter()
                    .zip(&start)
                    .enumerate()
                    .filter(|(i, _)| *i != SCHEDULE || scheduled)
                    .all(|(_, (q, s))| q.load(Ordering::SeqCst) >= s + 2);
                if round {
                    break;
                }
                changed.await;
            }
            if self.handled.load(Ordering::SeqCst) == handled {
                return;
            }
        }
    }
}

/// What every stand-in shares.
#[derive(Clone)]
struct Runtime {
    clients: Clients,
    region: String,
    handlers: Arc<dyn EventHandlers>,
    invocations: Arc<Invocations>,
    activity: Arc<Activity>,
}

/// Starts the queue and stream stand-ins, and the schedule when `schedule` is set
/// (`wharf-bench aws-cost` counts the work records cause, not the schedule's).
pub fn spawn(
    clients: &Clients,
    queues: &Queues,
    handlers: Arc<dyn EventHandlers>,
    data_dir: &Path,
    schedule: bool,
    activity: Arc<Activity>,
) -> StandIns {
    let runtime = Runtime {
        clients: clients.clone(),
        region: clients
            .settings
            .region
            .clone()
            .unwrap_or_else(|| "us-east-1".into()),
        handlers,
        invocations: Arc::default(),
        activity,
    };
    let mut tasks = vec![
        tokio::spawn(queue_loop(
            runtime.clone(),
            queues.ingest.clone(),
            Handler::Ingest,
        )),
        tokio::spawn(queue_loop(
            runtime.clone(),
            queues.delivery.clone(),
            Handler::Sender,
        )),
        tokio::spawn(stream_loop(runtime.clone(), data_dir.join(CHECKPOINT_FILE))),
    ];
    if schedule {
        tasks.push(tokio::spawn(schedule_loop(runtime.clone())));
        runtime.activity.scheduled.store(true, Ordering::SeqCst);
    }
    StandIns {
        tasks,
        invocations: runtime.invocations,
    }
}

/// The handler a queue's messages go to.
#[derive(Clone, Copy)]
enum Handler {
    Ingest,
    Sender,
}

/// Long-polls a queue and hands each batch to its handler, as Lambda's event source mapping.
async fn queue_loop(runtime: Runtime, url: String, handler: Handler) {
    let arn = loop {
        match crate::bootstrap::queue_arn(&runtime.clients, &url).await {
            Ok(arn) => break arn,
            Err(e) => {
                tracing::error!(error = %e, queue = url, "cannot read a queue; retrying");
                tokio::time::sleep(RETRY_WAIT).await;
            }
        }
    };
    loop {
        if let Err(e) = poll_queue(&runtime, &url, &arn, handler).await {
            tracing::error!(error = %e, queue = url, "queue poll failed; retrying");
            tokio::time::sleep(RETRY_WAIT).await;
        }
    }
}

/// Receives one batch (waiting up to a second for it), hands it to the handler as Lambda's
/// SQS event, and deletes the messages that succeeded.
async fn poll_queue(
    runtime: &Runtime,
    url: &str,
    arn: &str,
    handler: Handler,
) -> Result<(), CoreError> {
    let messages = crate::ingest::receive(&runtime.clients, url, 1).await?;
    let stand_in = match handler {
        Handler::Ingest => INGEST,
        Handler::Sender => DELIVERY,
    };
    if messages.is_empty() {
        runtime.activity.quiet(stand_in);
        return Ok(());
    }
    let event = serde_json::from_value(sqs_event(&messages, arn, &runtime.region))
        .map_err(CoreError::internal)?;
    let batch = lambda::queue_messages(event);
    let started = Instant::now();
    let (name, outcome) = match handler {
        Handler::Ingest => ("ingest", runtime.handlers.ingest(batch).await),
        Handler::Sender => ("sender", runtime.handlers.sender(batch).await),
    };
    runtime.invocations.record(name, started.elapsed());
    runtime.activity.handled();
    let handled = messages
        .iter()
        .filter(|m| {
            m.message_id
                .as_ref()
                .is_some_and(|id| !outcome.failed.contains(id))
        })
        .filter_map(|m| m.receipt_handle.clone());
    crate::ingest::delete(&runtime.clients, url, handled).await
}

/// Lambda's SQS event for `messages` of the queue `arn`, as the JSON Lambda sends.
pub fn sqs_event(messages: &[aws_sdk_sqs::types::Message], arn: &str, region: &str) -> Value {
    let records: Vec<Value> = messages
        .iter()
        .map(|m| {
            let attributes: Map<String, Value> = m
                .attributes
                .iter()
                .flatten()
                .map(|(k, v)| (k.as_str().to_owned(), Value::String(v.clone())))
                .collect();
            let message_attributes: Map<String, Value> = m
                .message_attributes
                .iter()
                .flatten()
                .map(|(k, v)| {
                    let value = json!({
                        "stringValue": v.string_value,
                        "stringListValues": [],
                        "binaryListValues": [],
                        "dataType": v.data_type,
                    });
                    (k.clone(), value)
                })
                .collect();
            json!({
                "messageId": m.message_id,
                "receiptHandle": m.receipt_handle,
                "body": m.body,
                "md5OfBody": m.md5_of_body,
                "attributes": attributes,
                "messageAttributes": message_attributes,
                "eventSource": "aws:sqs",
                "eventSourceARN": arn,
                "awsRegion": region,
            })
        })
        .collect();
    json!({ "Records": records })
}

/// Where each shard's handled records end.
#[derive(Default, serde::Serialize, serde::Deserialize)]
struct Checkpoints {
    stream_arn: String,
    shards: HashMap<String, String>,
}

impl Checkpoints {
    fn load(path: &Path, stream_arn: &str) -> Checkpoints {
        std::fs::read(path)
            .ok()
            .and_then(|b| serde_json::from_slice::<Checkpoints>(&b).ok())
            .filter(|c| c.stream_arn == stream_arn)
            .unwrap_or_else(|| Checkpoints {
                stream_arn: stream_arn.to_owned(),
                shards: HashMap::new(),
            })
    }

    fn save(&self, path: &Path) -> std::io::Result<()> {
        let temp = path.with_extension("json.tmp");
        std::fs::write(&temp, serde_json::to_vec(self)?)?;
        std::fs::rename(&temp, path)
    }
}

async fn stream_loop(runtime: Runtime, checkpoints: PathBuf) {
    loop {
        if let Err(e) = follow_stream(&runtime, &checkpoints).await {
            tracing::error!(error = %e, "reading the table's stream failed; retrying");
            tokio::time::sleep(RETRY_WAIT).await;
        }
    }
}

/// The table's stream ARN.
async fn stream_arn(clients: &Clients) -> Result<String, CoreError> {
    clients
        .dynamodb
        .describe_table()
        .table_name(&clients.settings.table)
        .send()
        .await
        .map_err(|e| aws_error("describing the table", e))?
        .table
        .and_then(|t| t.latest_stream_arn)
        .ok_or_else(|| CoreError::internal("the table has no stream"))
}

/// The shards of the stream, by id.
async fn shards(clients: &Clients, arn: &str) -> Result<Vec<String>, CoreError> {
    Ok(clients
        .streams
        .describe_stream()
        .stream_arn(arn)
        .send()
        .await
        .map_err(|e| aws_error("describing the stream", e))?
        .stream_description
        .and_then(|d| d.shards)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|s| s.shard_id)
        .collect())
}

/// The shard readers' state: an iterator per open shard, the closed shards, the checkpoints.
struct Shards {
    arn: String,
    path: PathBuf,
    checkpoints: Checkpoints,
    iterators: HashMap<String, String>,
    closed: Vec<String>,
}

/// Follows every shard of the table's stream, handing each batch to the stream handler.
async fn follow_stream(runtime: &Runtime, path: &Path) -> Result<(), CoreError> {
    let clients = &runtime.clients;
    let arn = stream_arn(clients).await?;
    let mut shards = Shards {
        checkpoints: Checkpoints::load(path, &arn),
        arn,
        path: path.to_owned(),
        iterators: HashMap::new(),
        closed: Vec::new(),
    };
    let mut described_at: Option<Instant> = None;
    loop {
        if described_at.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
            described_at = Some(Instant::now());
            shards.open_new(clients).await?;
        }
        let mut busy = false;
        for (shard, iterator) in shards.iterators.clone() {
            busy |= shards.read(runtime, shard, &iterator).await?;
        }
        if !busy {
            runtime.activity.quiet(STREAM);
            tokio::time::sleep(STREAM_IDLE).await;
        }
    }
}

impl Shards {
    /// Starts reading shards not seen before, after their checkpoints.
    async fn open_new(&mut self, clients: &Clients) -> Result<(), CoreError> {
        for id in shards(clients, &self.arn).await? {
            if self.iterators.contains_key(&id) || self.closed.contains(&id) {
                continue;
            }
            let after = self.checkpoints.shards.get(&id);
            let iterator = shard_iterator(clients, &self.arn, &id, after, false).await?;
            self.iterators.insert(id, iterator);
        }
        Ok(())
    }

    /// Reads one batch of a shard and hands it to the handler; `true` when it had records.
    async fn read(
        &mut self,
        runtime: &Runtime,
        shard: String,
        iterator: &str,
    ) -> Result<bool, CoreError> {
        let clients = &runtime.clients;
        let answer = clients
            .streams
            .get_records()
            .shard_iterator(iterator)
            .limit(100)
            .send()
            .await
            .map_err(|e| aws_error("reading a shard", e))?;
        let records = answer.records.unwrap_or_default();
        let mut next = answer.next_shard_iterator;
        if !records.is_empty() {
            let event = serde_json::from_value(stream_event(&records, &self.arn, &runtime.region))
                .map_err(CoreError::internal)?;
            let started = Instant::now();
            let outcome = runtime.handlers.stream(lambda::stream_changes(event)).await;
            runtime.invocations.record("stream", started.elapsed());
            runtime.activity.handled();
            if let Some(retry) = self.settle(clients, &shard, &records, outcome).await? {
                next = Some(retry);
            }
        }
        match next {
            Some(next) => {
                self.iterators.insert(shard, next);
            }
            None => {
                self.iterators.remove(&shard);
                self.closed.push(shard);
            }
        }
        Ok(!records.is_empty())
    }

    /// Checkpoints a handled batch; after a failure, checkpoints up to the failed record
    /// and answers an iterator at it, to read it again after a pause.
    async fn settle(
        &mut self,
        clients: &Clients,
        shard: &str,
        records: &[aws_sdk_dynamodbstreams::types::Record],
        outcome: BatchOutcome,
    ) -> Result<Option<String>, CoreError> {
        let mut sequences = records
            .iter()
            .filter_map(|r| r.dynamodb.as_ref()?.sequence_number.clone());
        let failed = outcome
            .failed
            .into_iter()
            .min_by(|a, b| (a.len(), a).cmp(&(b.len(), b)));
        let Some(seq) = failed else {
            if let Some(last) = sequences.next_back() {
                self.checkpoint(shard, last)?;
            }
            return Ok(None);
        };
        tracing::warn!(shard, sequence = %seq, "stream batch failed; retrying from it");
        if let Some(before) = sequences.take_while(|s| *s != seq).last() {
            self.checkpoint(shard, before)?;
        }
        let retry = shard_iterator(clients, &self.arn, shard, Some(&seq), true).await?;
        tokio::time::sleep(RETRY_WAIT).await;
        Ok(Some(retry))
    }

    fn checkpoint(&mut self, shard: &str, sequence: String) -> Result<(), CoreError> {
        self.checkpoints.shards.insert(shard.to_owned(), sequence);
        self.checkpoints
            .save(&self.path)
            .map_err(CoreError::internal)
    }
}

/// An iterator at the start of a shard, after its checkpoint, or at a sequence number.
async fn shard_iterator(
    clients: &Clients,
    arn: &str,
    shard: &str,
    sequence: Option<&String>,
    at: bool,
) -> Result<String, CoreError> {
    let kind = match (sequence, at) {
        (None, _) => ShardIteratorType::TrimHorizon,
        (Some(_), true) => ShardIteratorType::AtSequenceNumber,
        (Some(_), false) => ShardIteratorType::AfterSequenceNumber,
    };
    clients
        .streams
        .get_shard_iterator()
        .stream_arn(arn)
        .shard_id(shard)
        .shard_iterator_type(kind)
        .set_sequence_number(sequence.cloned())
        .send()
        .await
        .map_err(|e| aws_error("opening a shard", e))?
        .shard_iterator
        .ok_or_else(|| CoreError::internal("no shard iterator"))
}

/// Lambda's DynamoDB Streams event for `records`, as the JSON Lambda sends.
pub fn stream_event(
    records: &[aws_sdk_dynamodbstreams::types::Record],
    arn: &str,
    region: &str,
) -> Value {
    let records: Vec<Value> = records
        .iter()
        .map(|r| {
            let change = r.dynamodb.as_ref();
            let image = |m: Option<&HashMap<String, AttributeValue>>| {
                Value::Object(
                    m.into_iter()
                        .flatten()
                        .map(|(k, v)| (k.clone(), attribute_json(v)))
                        .collect(),
                )
            };
            json!({
                "eventID": r.event_id,
                "eventName": r.event_name.as_ref().map(|n| n.as_str().to_owned()),
                "eventVersion": r.event_version,
                "eventSource": "aws:dynamodb",
                "awsRegion": r.aws_region.clone().unwrap_or_else(|| region.to_owned()),
                "eventSourceARN": arn,
                "dynamodb": {
                    "ApproximateCreationDateTime": change
                        .and_then(|c| c.approximate_creation_date_time)
                        .map(|t| t.secs())
                        .unwrap_or_default(),
                    "Keys": image(change.and_then(|c| c.keys.as_ref())),
                    "NewImage": image(change.and_then(|c| c.new_image.as_ref())),
                    "SequenceNumber": change.and_then(|c| c.sequence_number.clone()),
                    "SizeBytes": change.and_then(|c| c.size_bytes).unwrap_or_default(),
                    "StreamViewType": change
                        .and_then(|c| c.stream_view_type.as_ref())
                        .map(|v| v.as_str().to_owned()),
                },
            })
        })
        .collect();
    json!({ "Records": records })
}

/// An attribute value in DynamoDB's JSON (`{"S": "…"}`), as stream events carry it.
fn attribute_json(v: &AttributeValue) -> Value {
    let b64 = |b: &aws_smithy_types::Blob| {
        Value::String(base64::engine::general_purpose::STANDARD.encode(b.as_ref()))
    };
    match v {
        AttributeValue::S(s) => json!({ "S": s }),
        AttributeValue::N(n) => json!({ "N": n }),
        AttributeValue::B(b) => json!({ "B": b64(b) }),
        AttributeValue::Bool(b) => json!({ "BOOL": b }),
        AttributeValue::Null(n) => json!({ "NULL": n }),
        AttributeValue::Ss(s) => json!({ "SS": s }),
        AttributeValue::Ns(n) => json!({ "NS": n }),
        AttributeValue::Bs(bs) => json!({ "BS": bs.iter().map(b64).collect::<Vec<_>>() }),
        AttributeValue::L(l) => json!({ "L": l.iter().map(attribute_json).collect::<Vec<_>>() }),
        AttributeValue::M(m) => json!({
            "M": m.iter().map(|(k, v)| (k.clone(), attribute_json(v))).collect::<Map<_, _>>()
        }),
        _ => Value::Null,
    }
}

/// The schedule: a tick every half second, and the retention rule's event every ten minutes
/// (and at start).
async fn schedule_loop(runtime: Runtime) {
    let mut last_retention: Option<Instant> = None;
    loop {
        let retention = last_retention.is_none_or(|t| t.elapsed() >= RETENTION_EVERY);
        if retention {
            last_retention = Some(Instant::now());
        }
        match serde_json::from_value(schedule_event(&runtime.region, retention)) {
            Ok(event) => {
                let started = Instant::now();
                let done = runtime.handlers.schedule(lambda::tick(&event)).await;
                runtime.invocations.record("schedule", started.elapsed());
                runtime.activity.quiet(SCHEDULE);
                if let Err(e) = done {
                    tracing::warn!(error = %e, "schedule tick failed");
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot build the schedule event"),
        }
        tokio::time::sleep(TICK).await;
    }
}

/// EventBridge's scheduled event of the tick rule, or of the retention rule.
fn schedule_event(region: &str, retention: bool) -> Value {
    let rule = if retention {
        format!("wharf{RETENTION_RULE_SUFFIX}")
    } else {
        "wharf-tick".to_owned()
    };
    json!({
        "version": "0",
        "id": uuid_like(),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": "000000000000",
        "time": time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
        "region": region,
        "resources": [format!("arn:aws:events:{region}:000000000000:rule/{rule}")],
        "detail": {},
    })
}

fn uuid_like() -> String {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).unwrap_or_default();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
