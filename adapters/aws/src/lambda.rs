//! Lambda's events and answers, as the handlers take and give them: SQS batches become
//! [`QueueMessage`]s, DynamoDB stream batches [`StreamChange`]s (the table's own items,
//! decoded in `store::stream` next to their layout), API Gateway WebSocket requests
//! [`SocketEvent`]s and EventBridge events [`Tick`]s; a [`BatchOutcome`] becomes Lambda's
//! partial batch response. The Lambda entry and the stand-ins of `wharf serve --backend aws`
//! both go through these, so a handler sees the same input either way.

use aws_lambda_events::event::apigw::{ApiGatewayProxyResponse, ApiGatewayWebsocketProxyRequest};
use aws_lambda_events::event::dynamodb::Event as StreamEvent;
use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use aws_lambda_events::event::sqs::SqsEvent;
use aws_lambda_events::event::streams::{
    DynamoDbBatchItemFailure, DynamoDbEventResponse, SqsBatchItemFailure, SqsEventResponse,
};
use wharf_core::Timestamp;
use wharf_core::domain::{BatchOutcome, QueueMessage, SocketEvent, StreamChange, Tick};

/// The name a schedule rule ends with when its event should also run the retention sweep.
pub const RETENTION_RULE_SUFFIX: &str = "-retention";

/// The messages of an SQS event; the queue of each is named by its event source ARN.
pub fn queue_messages(event: SqsEvent) -> Vec<QueueMessage> {
    event
        .records
        .into_iter()
        .filter_map(|m| {
            let id = m.message_id?;
            let queue = m
                .event_source_arn
                .as_deref()
                .and_then(|arn| arn.rsplit(':').next())
                .unwrap_or_default()
                .to_owned();
            Some(QueueMessage {
                id,
                queue,
                body: m.body.unwrap_or_default(),
                sent_at: m
                    .attributes
                    .get("SentTimestamp")
                    .and_then(|ms| epoch_millis(ms)),
                attributes: m
                    .message_attributes
                    .into_iter()
                    .filter_map(|(name, a)| Some((name, a.string_value?)))
                    .collect(),
                receipt: m.receipt_handle,
            })
        })
        .collect()
}

/// An instant given as epoch milliseconds (SQS's `SentTimestamp`).
pub(crate) fn epoch_millis(ms: &str) -> Option<Timestamp> {
    let ms = ms.parse::<i128>().ok()?;
    Timestamp::from_unix_timestamp_nanos(ms * 1_000_000).ok()
}

/// SQS's partial batch response failing the messages `outcome` names.
pub fn sqs_response(outcome: BatchOutcome) -> SqsEventResponse {
    let mut response = SqsEventResponse::default();
    response.batch_item_failures = outcome
        .failed
        .into_iter()
        .map(|id| {
            let mut failure = SqsBatchItemFailure::default();
            failure.item_identifier = Some(id);
            failure
        })
        .collect();
    response
}

/// The changes of a stream event the pipeline acts on: inserts of raw and output parts.
/// An item of the table that cannot be read is logged and skipped: retrying would fail the
/// same way forever.
pub fn stream_changes(event: StreamEvent) -> Vec<StreamChange> {
    let mut changes = Vec::new();
    for record in event.records {
        if record.event_name != "INSERT" {
            continue;
        }
        let Some(sequence) = record.change.sequence_number.clone() else {
            continue;
        };
        let decoded = serde_json::to_value(&record.change.new_image)
            .map_err(wharf_core::CoreError::internal)
            .and_then(|image| crate::store::change_of(&sequence, &image));
        match decoded {
            Ok(Some(change)) => changes.push(change),
            Ok(None) => {}
            Err(e) => tracing::error!(error = %e, sequence, "unreadable stream item"),
        }
    }
    changes
}

/// The stream's partial batch response: Lambda retries from the first failed sequence.
pub fn stream_response(outcome: BatchOutcome) -> DynamoDbEventResponse {
    let mut response = DynamoDbEventResponse::default();
    response.batch_item_failures = outcome
        .failed
        .into_iter()
        .map(|sequence| {
            let mut failure = DynamoDbBatchItemFailure::default();
            failure.item_identifier = Some(sequence);
            failure
        })
        .collect();
    response
}

/// A WebSocket route's request: `$connect` carries `?subscription_id=` and the subscriber's
/// token (`Authorization: Bearer` or `?access_token=`, as browsers cannot set headers).
pub fn socket_event(request: &ApiGatewayWebsocketProxyRequest) -> SocketEvent {
    let context = &request.request_context;
    let connection = context.connection_id.clone().unwrap_or_default();
    match context.route_key.as_deref().unwrap_or("$default") {
        "$connect" => {
            let query = &request.query_string_parameters;
            let header = request
                .headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(wharf_core::credentials::bearer)
                .map(str::to_owned);
            SocketEvent::Connect {
                connection,
                token: header.or_else(|| query.first("access_token").map(str::to_owned)),
                subscription: query.first("subscription_id").map(str::to_owned),
            }
        }
        "$disconnect" => SocketEvent::Disconnect { connection },
        _ => SocketEvent::Message {
            connection,
            body: request.body.clone().unwrap_or_default(),
        },
    }
}

/// The answer to a WebSocket route: just a status.
pub fn socket_response(status: u16) -> ApiGatewayProxyResponse {
    let mut response = ApiGatewayProxyResponse::default();
    response.status_code = i64::from(status);
    response
}

/// The tick of a schedule event; the retention rule's ticks also sweep.
pub fn tick(event: &EventBridgeEvent) -> Tick {
    Tick {
        retention: event
            .resources
            .iter()
            .flatten()
            .any(|r| r.ends_with(RETENTION_RULE_SUFFIX)),
    }
}
