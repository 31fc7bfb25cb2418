//! `wharf serve --backend aws` runs the pipeline in one process by standing in for Lambda's
//! event sources: it long-polls the ingest and delivery queues, reads the table's stream shard by shard,
//! and fires the schedule on a timer. Each batch becomes the very event Lambda would deliver
//! (built as Lambda's JSON and parsed into the same `aws_lambda_events` types) and goes to the
//! same handler, and the partial-failure answer is honoured as Lambda honours it: failed
//! messages are left on the queue to come back (and, after five receives, go to the
//! dead-letter queue); a failed stream record is read again from its sequence number.
//! Stream positions are checkpointed in the data dir after each handled batch, so a restart
//! resumes where it stopped.

use super::AwsShape;
use super::handlers::{Handlers, RETENTION_RULE_SUFFIX};
use aws_sdk_dynamodbstreams::types::{AttributeValue, ShardIteratorType};
use base64::Engine;
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use wharf_aws::Clients;
pub use wharf_aws::bootstrap::queue_arn;

const TICK: Duration = Duration::from_millis(500);
const RETENTION_EVERY: Duration = Duration::from_secs(600);
const STREAM_IDLE: Duration = Duration::from_millis(100);
const RETRY_WAIT: Duration = Duration::from_secs(1);
const CHECKPOINT_FILE: &str = "stream-checkpoints.json";

/// Starts the stand-ins; they run until the process ends.
pub fn spawn(shape: &AwsShape, handlers: Arc<Handlers>, data_dir: &Path) -> Vec<JoinHandle<()>> {
    let mut tasks = spawn_sources(shape, handlers.clone(), data_dir);
    tasks.push(tokio::spawn(schedule_loop(region(shape), handlers)));
    tasks
}

fn region(shape: &AwsShape) -> String {
    shape
        .clients
        .settings
        .region
        .clone()
        .unwrap_or_else(|| "us-east-1".into())
}

/// Starts the queue and stream stand-ins only (no schedule: `wharf cost` counts the work
/// records cause, not the schedule's).
pub fn spawn_sources(
    shape: &AwsShape,
    handlers: Arc<Handlers>,
    data_dir: &Path,
) -> Vec<JoinHandle<()>> {
    let region = region(shape);
    vec![
        tokio::spawn(queue_loop(
            shape.clients.clone(),
            shape.ingest_queue_url.clone(),
            handlers.clone(),
        )),
        tokio::spawn(queue_loop(
            shape.clients.clone(),
            shape.delivery_queue_url.clone(),
            handlers.clone(),
        )),
        tokio::spawn(stream_loop(
            shape.clients.clone(),
            region,
            handlers,
            data_dir.join(CHECKPOINT_FILE),
        )),
    ]
}

/// Long-polls a queue and hands each batch to its handler, as Lambda's event source mapping.
async fn queue_loop(clients: Clients, queue_url: String, handlers: Arc<Handlers>) {
    let arn = loop {
        match queue_arn(&clients, &queue_url).await {
            Ok(arn) => break arn,
            Err(e) => {
                tracing::error!(error = %e, queue = queue_url, "cannot read a queue; retrying");
                tokio::time::sleep(RETRY_WAIT).await;
            }
        }
    };
    loop {
        if let Err(e) = handlers.poll_queue(&queue_url, &arn, 1).await {
            tracing::error!(error = %e, queue = queue_url, "queue poll failed; retrying");
            tokio::time::sleep(RETRY_WAIT).await;
        }
    }
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

    fn save(&self, path: &Path) -> anyhow::Result<()> {
        let temp = path.with_extension("json.tmp");
        std::fs::write(&temp, serde_json::to_vec(self)?)?;
        std::fs::rename(&temp, path)?;
        Ok(())
    }
}

async fn stream_loop(
    clients: Clients,
    region: String,
    handlers: Arc<Handlers>,
    checkpoints: PathBuf,
) {
    loop {
        if let Err(e) = follow_stream(&clients, &region, &handlers, &checkpoints).await {
            tracing::error!(error = %e, "reading the table's stream failed; retrying");
            tokio::time::sleep(RETRY_WAIT).await;
        }
    }
}

/// Follows every shard of the table's stream, handing each batch to the stream handler.
async fn follow_stream(
    clients: &Clients,
    region: &str,
    handlers: &Handlers,
    path: &Path,
) -> anyhow::Result<()> {
    let table = clients
        .dynamodb
        .describe_table()
        .table_name(&clients.settings.table)
        .send()
        .await?
        .table
        .ok_or_else(|| anyhow::anyhow!("no table"))?;
    let arn = table
        .latest_stream_arn
        .ok_or_else(|| anyhow::anyhow!("the table has no stream"))?;
    let mut checkpoints = Checkpoints::load(path, &arn);
    let mut iterators: HashMap<String, String> = HashMap::new();
    let mut closed: Vec<String> = Vec::new();
    let mut described_at = std::time::Instant::now() - Duration::from_secs(3600);
    loop {
        if described_at.elapsed() > Duration::from_secs(10) {
            described_at = std::time::Instant::now();
            let shards = clients
                .streams
                .describe_stream()
                .stream_arn(&arn)
                .send()
                .await?
                .stream_description
                .and_then(|d| d.shards)
                .unwrap_or_default();
            for shard in shards {
                let Some(id) = shard.shard_id else { continue };
                if iterators.contains_key(&id) || closed.contains(&id) {
                    continue;
                }
                let iterator =
                    shard_iterator(clients, &arn, &id, checkpoints.shards.get(&id), false).await?;
                iterators.insert(id, iterator);
            }
        }
        let mut busy = false;
        for (shard, iterator) in iterators.clone() {
            let answer = clients
                .streams
                .get_records()
                .shard_iterator(&iterator)
                .limit(100)
                .send()
                .await?;
            let records = answer.records.unwrap_or_default();
            let mut next = answer.next_shard_iterator;
            if !records.is_empty() {
                busy = true;
                let event = stream_event(&records, &arn, region)?;
                let response = handlers.stream(serde_json::from_value(event)?).await;
                let failed = response
                    .batch_item_failures
                    .into_iter()
                    .filter_map(|f| f.item_identifier)
                    .min_by(|a, b| (a.len(), a).cmp(&(b.len(), b)));
                match failed {
                    Some(seq) => {
                        // Handled up to the failed record; read again from it, after a pause.
                        tracing::warn!(shard, sequence = %seq, "stream batch failed; retrying from it");
                        let before = records
                            .iter()
                            .filter_map(|r| r.dynamodb.as_ref()?.sequence_number.clone())
                            .take_while(|s| *s != seq)
                            .last();
                        if let Some(before) = before {
                            checkpoints.shards.insert(shard.clone(), before);
                            checkpoints.save(path)?;
                        }
                        next = Some(shard_iterator(clients, &arn, &shard, Some(&seq), true).await?);
                        tokio::time::sleep(RETRY_WAIT).await;
                    }
                    None => {
                        if let Some(last) = records
                            .iter()
                            .rev()
                            .find_map(|r| r.dynamodb.as_ref()?.sequence_number.clone())
                        {
                            checkpoints.shards.insert(shard.clone(), last);
                            checkpoints.save(path)?;
                        }
                    }
                }
            }
            match next {
                Some(next) => {
                    iterators.insert(shard, next);
                }
                None => {
                    iterators.remove(&shard);
                    closed.push(shard);
                }
            }
        }
        if !busy {
            tokio::time::sleep(STREAM_IDLE).await;
        }
    }
}

/// An iterator at the start of a shard, after its checkpoint, or at a sequence number.
async fn shard_iterator(
    clients: &Clients,
    arn: &str,
    shard: &str,
    sequence: Option<&String>,
    at: bool,
) -> anyhow::Result<String> {
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
        .await?
        .shard_iterator
        .ok_or_else(|| anyhow::anyhow!("no shard iterator"))
}

/// Lambda's DynamoDB Streams event for `records`, as the JSON Lambda sends.
pub fn stream_event(
    records: &[aws_sdk_dynamodbstreams::types::Record],
    arn: &str,
    region: &str,
) -> anyhow::Result<Value> {
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
    Ok(json!({ "Records": records }))
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
async fn schedule_loop(region: String, handlers: Arc<Handlers>) {
    let mut last_retention: Option<std::time::Instant> = None;
    loop {
        let retention = last_retention.is_none_or(|t| t.elapsed() >= RETENTION_EVERY);
        let rule = if retention {
            last_retention = Some(std::time::Instant::now());
            format!("wharf{RETENTION_RULE_SUFFIX}")
        } else {
            "wharf-tick".to_owned()
        };
        let event = json!({
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
        });
        match serde_json::from_value(event) {
            Ok(event) => {
                if let Err(e) = handlers.schedule(event).await {
                    tracing::warn!(error = %e, "schedule tick failed");
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot build the schedule event"),
        }
        tokio::time::sleep(TICK).await;
    }
}

fn uuid_like() -> String {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).unwrap_or_default();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
