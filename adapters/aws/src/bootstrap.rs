//! `wharf aws bootstrap`: creates the table and queues the aws shape needs, for an emulator or
//! a development account (production deploys the SAM template). Running it again changes
//! nothing.

use crate::{Clients, aws_error};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType, StreamSpecification, StreamViewType, TableStatus,
    TimeToLiveSpecification,
};
use aws_sdk_sqs::types::QueueAttributeName;
use std::collections::HashMap;
use std::time::Duration;
use wharf_core::CoreError;

/// The attribute DynamoDB's TTL reads (epoch seconds).
pub const TTL_ATTRIBUTE: &str = "expires";
/// The global secondary indexes, each keyed by `{name}pk` / `{name}sk`.
pub const INDEXES: [&str; 3] = ["gsi1", "gsi2", "gsi3"];
/// Receives after which an ingest message goes to the dead-letter queue.
pub const MAX_RECEIVES: u32 = 5;

/// What bootstrap created or found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bootstrapped {
    pub table: String,
    pub table_created: bool,
    pub stream_arn: String,
    pub ingest_queue_url: String,
    pub ingest_dlq_url: String,
    pub delivery_queue_url: String,
    pub delivery_dlq_url: String,
}

/// Creates whatever is missing and answers where everything is.
pub async fn bootstrap(clients: &Clients) -> Result<Bootstrapped, CoreError> {
    let table = clients.settings.table.clone();
    let table_created = create_table(clients, &table).await?;
    let stream_arn = wait_active(clients, &table).await?;
    enable_ttl(clients, &table).await?;
    let prefix = &clients.settings.queue_prefix;
    let (ingest_queue_url, ingest_dlq_url) =
        queue_with_dlq(clients, &format!("{prefix}-ingest")).await?;
    let (delivery_queue_url, delivery_dlq_url) =
        queue_with_dlq(clients, &format!("{prefix}-delivery")).await?;
    Ok(Bootstrapped {
        table,
        table_created,
        stream_arn,
        ingest_queue_url,
        ingest_dlq_url,
        delivery_queue_url,
        delivery_dlq_url,
    })
}

/// Creates queue `name` with its dead-letter queue `{name}-dlq`; answers both URLs.
async fn queue_with_dlq(clients: &Clients, name: &str) -> Result<(String, String), CoreError> {
    let dlq_url = create_queue(clients, &format!("{name}-dlq"), None).await?;
    let dlq_arn = queue_arn(clients, &dlq_url).await?;
    let redrive = serde_json::json!({
        "deadLetterTargetArn": dlq_arn,
        "maxReceiveCount": MAX_RECEIVES.to_string(),
    })
    .to_string();
    Ok((create_queue(clients, name, Some(redrive)).await?, dlq_url))
}

fn key(name: &str, kind: KeyType) -> Result<KeySchemaElement, CoreError> {
    KeySchemaElement::builder()
        .attribute_name(name)
        .key_type(kind)
        .build()
        .map_err(CoreError::internal)
}

fn string_attribute(name: &str) -> Result<AttributeDefinition, CoreError> {
    AttributeDefinition::builder()
        .attribute_name(name)
        .attribute_type(ScalarAttributeType::S)
        .build()
        .map_err(CoreError::internal)
}

/// Creates the table; `false` if it already existed.
async fn create_table(clients: &Clients, table: &str) -> Result<bool, CoreError> {
    let mut request = clients
        .dynamodb
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(string_attribute("pk")?)
        .attribute_definitions(string_attribute("sk")?)
        .key_schema(key("pk", KeyType::Hash)?)
        .key_schema(key("sk", KeyType::Range)?)
        .stream_specification(
            StreamSpecification::builder()
                .stream_enabled(true)
                .stream_view_type(StreamViewType::NewImage)
                .build()
                .map_err(CoreError::internal)?,
        );
    for index in INDEXES {
        let (pk, sk) = (format!("{index}pk"), format!("{index}sk"));
        request = request
            .attribute_definitions(string_attribute(&pk)?)
            .attribute_definitions(string_attribute(&sk)?)
            .global_secondary_indexes(
                GlobalSecondaryIndex::builder()
                    .index_name(index)
                    .key_schema(key(&pk, KeyType::Hash)?)
                    .key_schema(key(&sk, KeyType::Range)?)
                    .projection(
                        Projection::builder()
                            .projection_type(ProjectionType::All)
                            .build(),
                    )
                    .build()
                    .map_err(CoreError::internal)?,
            );
    }
    match request.send().await {
        Ok(_) => Ok(true),
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_resource_in_use_exception()) =>
        {
            Ok(false)
        }
        Err(e) => Err(aws_error("creating the table", e)),
    }
}

/// Waits until the table is active and answers its stream's ARN.
async fn wait_active(clients: &Clients, table: &str) -> Result<String, CoreError> {
    for _ in 0..120 {
        let described = clients
            .dynamodb
            .describe_table()
            .table_name(table)
            .send()
            .await
            .map_err(|e| aws_error("describing the table", e))?;
        let t = described
            .table
            .ok_or_else(|| CoreError::internal("DescribeTable answered no table"))?;
        if t.table_status == Some(TableStatus::Active) {
            return t
                .latest_stream_arn
                .ok_or_else(|| CoreError::internal(format!("table {table} has no stream")));
        }
        tokio_sleep(Duration::from_millis(500)).await;
    }
    Err(CoreError::unavailable(format!(
        "table {table} did not become active within a minute"
    )))
}

async fn tokio_sleep(d: Duration) {
    // The SDK's own async sleep, so this crate needs no timer of its own.
    aws_smithy_async::rt::sleep::AsyncSleep::sleep(
        &aws_smithy_async::rt::sleep::TokioSleep::new(),
        d,
    )
    .await;
}

async fn enable_ttl(clients: &Clients, table: &str) -> Result<(), CoreError> {
    let current = clients
        .dynamodb
        .describe_time_to_live()
        .table_name(table)
        .send()
        .await
        .map_err(|e| aws_error("describing the table's TTL", e))?;
    let on = current
        .time_to_live_description
        .is_some_and(|d| d.attribute_name.as_deref() == Some(TTL_ATTRIBUTE));
    if on {
        return Ok(());
    }
    clients
        .dynamodb
        .update_time_to_live()
        .table_name(table)
        .time_to_live_specification(
            TimeToLiveSpecification::builder()
                .enabled(true)
                .attribute_name(TTL_ATTRIBUTE)
                .build()
                .map_err(CoreError::internal)?,
        )
        .send()
        .await
        .map_err(|e| aws_error("enabling the table's TTL", e))?;
    Ok(())
}

/// Creates a queue (or finds it, when its attributes match) and answers its URL.
pub(crate) async fn create_queue(
    clients: &Clients,
    name: &str,
    redrive: Option<String>,
) -> Result<String, CoreError> {
    let mut attributes = HashMap::new();
    // Long enough for a handler batch with retries; SQS's default is 30 s.
    attributes.insert(QueueAttributeName::VisibilityTimeout, "120".to_owned());
    attributes.insert(
        QueueAttributeName::MessageRetentionPeriod,
        "1209600".to_owned(),
    );
    if let Some(policy) = redrive {
        attributes.insert(QueueAttributeName::RedrivePolicy, policy);
    }
    let created = clients
        .sqs
        .create_queue()
        .queue_name(name)
        .set_attributes(Some(attributes))
        .send()
        .await
        .map_err(|e| aws_error(&format!("creating queue {name}"), e))?;
    created
        .queue_url
        .ok_or_else(|| CoreError::internal(format!("CreateQueue {name} answered no URL")))
}

/// The ARN of the queue at `url`.
pub async fn queue_arn(clients: &Clients, url: &str) -> Result<String, CoreError> {
    let attributes = clients
        .sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(|e| aws_error("reading a queue's ARN", e))?;
    attributes
        .attributes
        .and_then(|mut a| a.remove(&QueueAttributeName::QueueArn))
        .ok_or_else(|| CoreError::internal(format!("queue {url} has no ARN")))
}
