//! The `wharf` binary as a Lambda bootstrap: for each handler, the real binary is started with
//! `AWS_LAMBDA_RUNTIME_API` pointing at a Runtime API served here, takes one event in Lambda's
//! JSON, and posts back the answer Lambda would get, against resources on a real moto server.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::too_many_lines)]

#[path = "support/moto.rs"]
mod moto;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::routing::{get, post};
use serde_json::{Value, json};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// A Runtime API with one event to hand out; what the function posts back arrives on `answers`.
#[derive(Clone)]
struct Runtime {
    event: Arc<Mutex<Option<Value>>>,
    answers: mpsc::UnboundedSender<(String, Value)>,
}

async fn next(State(rt): State<Runtime>) -> (HeaderMap, String) {
    let event = rt.event.lock().unwrap().take();
    let Some(event) = event else {
        // Lambda holds `next` open until there is an invocation: hold it for the test's length.
        tokio::time::sleep(Duration::from_secs(3600)).await;
        return (HeaderMap::new(), String::new());
    };
    let mut headers = HeaderMap::new();
    headers.insert("lambda-runtime-aws-request-id", "req-1".parse().unwrap());
    let deadline = time::OffsetDateTime::now_utc().unix_timestamp() * 1000 + 60_000;
    headers.insert(
        "lambda-runtime-deadline-ms",
        deadline.to_string().parse().unwrap(),
    );
    headers.insert(
        "lambda-runtime-invoked-function-arn",
        "arn:aws:lambda:us-east-1:000000000000:function:wharf"
            .parse()
            .unwrap(),
    );
    headers.insert("lambda-runtime-trace-id", "Root=1-0-0".parse().unwrap());
    (headers, event.to_string())
}

async fn answer(State(rt): State<Runtime>, Path((id, kind)): Path<(String, String)>, body: String) {
    let value = serde_json::from_str(&body).unwrap_or(Value::String(body));
    let _ = rt.answers.send((format!("{id}/{kind}"), value));
}

async fn init_error(State(rt): State<Runtime>, body: String) {
    let _ = rt.answers.send(("init/error".into(), Value::String(body)));
}

/// Runs the binary as function `handler` on `event`; answers (what it posted to, the body).
async fn invoke(
    config: &wharf::config::AwsConfig,
    extra: &[(&str, String)],
    handler: &str,
    event: Value,
) -> (String, Value) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let runtime = Runtime {
        event: Arc::new(Mutex::new(Some(event))),
        answers: tx,
    };
    let app = axum::Router::new()
        .route("/2018-06-01/runtime/invocation/next", get(next))
        .route("/2018-06-01/runtime/invocation/{id}/{kind}", post(answer))
        .route("/2018-06-01/runtime/init/error", post(init_error))
        .with_state(runtime);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });

    // CI points this at the artifact cargo-lambda built, to run the deployed binary itself.
    let binary = std::env::var("WHARF_LAMBDA_BINARY")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_wharf").to_owned());
    let mut command = Command::new(binary);
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("AWS_LAMBDA_RUNTIME_API", api.to_string())
        .env("_HANDLER", handler)
        .env("AWS_LAMBDA_FUNCTION_NAME", format!("wharf-{handler}"))
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "512")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env(
            "WHARF_AWS__ENDPOINT_URL",
            config.endpoint_url.clone().unwrap(),
        )
        .env("WHARF_AWS__REGION", "us-east-1")
        .env("WHARF_AWS__TABLE", &config.table)
        .env("WHARF_AWS__ACCESS_KEY_ID", "testing")
        .env("WHARF_AWS__SECRET_ACCESS_KEY", "testing")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (k, v) in extra {
        command.env(k, v);
    }
    let mut child: Child = command.spawn().unwrap();
    let got = tokio::time::timeout(Duration::from_secs(60), rx.recv()).await;
    let _ = child.kill();
    let _ = child.wait();
    got.expect("the function answered within a minute")
        .expect("an answer")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_runs_each_handler_under_the_lambda_runtime_api() {
    let config = moto::fresh_aws_config();
    // The resources a deployment would have: created here as `wharf aws bootstrap` does.
    let clients = wharf_aws::Clients::connect(wharf_aws::AwsSettings {
        endpoint_url: config.endpoint_url.clone(),
        region: Some("us-east-1".into()),
        table: config.table.clone(),
        queue_prefix: config.queue_prefix.clone(),
        bucket: config.bucket.clone(),
        credentials: Some(("testing".into(), "testing".into())),
    })
    .await;
    let done = wharf_aws::bootstrap::bootstrap(&clients).await.unwrap();
    let pool = wharf_aws::cognito::bootstrap_user_pool(&clients, &config.user_pool_name)
        .await
        .unwrap();
    let deployed = [
        ("WHARF_AWS__USER_POOL_ID", pool.pool_id.clone()),
        ("WHARF_AWS__CLIENT_ID", pool.client_id.clone()),
        ("WHARF_AWS__INGEST_QUEUE_URL", done.ingest_queue_url.clone()),
        (
            "WHARF_AWS__DELIVERY_QUEUE_URL",
            done.delivery_queue_url.clone(),
        ),
        ("WHARF_AWS__SECRET_KEY", "A".repeat(43)),
    ];

    let api = invoke(&config, &deployed, "api", json!({
        "version": "2.0", "routeKey": "$default", "rawPath": "/healthz", "rawQueryString": "",
        "headers": {"host": "api.example"},
        "requestContext": {
            "accountId": "000000000000", "apiId": "api", "domainName": "api.example",
            "domainPrefix": "api", "requestId": "r1", "routeKey": "$default", "stage": "$default",
            "time": "27/Nov/2026:08:00:00 +0000", "timeEpoch": 0,
            "http": {"method": "GET", "path": "/healthz", "protocol": "HTTP/1.1",
                     "sourceIp": "127.0.0.1", "userAgent": "test"}
        },
        "isBase64Encoded": false
    })).await;
    assert_eq!(api.0, "req-1/response", "{api:?}");
    assert_eq!(api.1["statusCode"], 200, "{api:?}");
    let body: Value = serde_json::from_str(api.1["body"].as_str().unwrap()).unwrap();
    assert_eq!(body, json!({"status": "ok"}));

    let ingest = invoke(
        &config,
        &deployed,
        "ingest",
        json!({"Records": [{
            "messageId": "m-poison", "receiptHandle": "h", "body": "not a batch of records",
            "attributes": {"ApproximateReceiveCount": "1"}, "messageAttributes": {},
            "md5OfBody": "x", "eventSource": "aws:sqs",
            "eventSourceARN": "arn:aws:sqs:us-east-1:000000000000:q", "awsRegion": "us-east-1"
        }]}),
    )
    .await;
    assert_eq!(ingest.0, "req-1/response", "{ingest:?}");
    assert_eq!(
        ingest.1,
        json!({"batchItemFailures": [{"itemIdentifier": "m-poison"}]})
    );

    let stream = invoke(&config, &deployed, "stream", json!({"Records": []})).await;
    assert_eq!(
        stream,
        ("req-1/response".into(), json!({"batchItemFailures": []}))
    );

    // A delivery message that names no feed is failed, so it ends in the dead-letter queue.
    let sender = invoke(
        &config,
        &deployed,
        "sender",
        json!({"Records": [{
            "messageId": "d-stray", "receiptHandle": "h", "body": "{}",
            "attributes": {"ApproximateReceiveCount": "1"}, "messageAttributes": {},
            "md5OfBody": "x", "eventSource": "aws:sqs",
            "eventSourceARN": "arn:aws:sqs:us-east-1:000000000000:wharf-delivery", "awsRegion": "us-east-1"
        }]}),
    )
    .await;
    assert_eq!(
        sender.1,
        json!({"batchItemFailures": [{"itemIdentifier": "d-stray"}]})
    );

    // A socket that brings no token is refused at $connect.
    let websocket = invoke(
        &config,
        &deployed,
        "websocket",
        json!({
            "requestContext": {"routeKey": "$connect", "eventType": "CONNECT", "connectionId": "c1",
                               "stage": "prod", "apiId": "abc", "requestId": "r", "connectedAt": 0,
                               "requestTimeEpoch": 0, "identity": {"sourceIp": "127.0.0.1"}},
            "queryStringParameters": {"subscription_id": "sub_x"}, "headers": {},
            "isBase64Encoded": false
        }),
    )
    .await;
    assert_eq!(websocket.0, "req-1/response", "{websocket:?}");
    assert_eq!(websocket.1["statusCode"], 401, "{websocket:?}");

    let schedule = invoke(
        &config,
        &deployed,
        "schedule",
        json!({
            "version": "0", "id": "e1", "detail-type": "Scheduled Event", "source": "aws.events",
            "account": "000000000000", "time": "2026-11-27T08:00:00Z", "region": "us-east-1",
            "resources": ["arn:aws:events:us-east-1:000000000000:rule/wharf-tick"], "detail": {}
        }),
    )
    .await;
    assert_eq!(schedule, ("req-1/response".into(), Value::Null));

    // A function whose resources are not named stops at its cold start and says why.
    let unconfigured = invoke(&config, &[], "api", json!({})).await;
    assert_eq!(unconfigured.0, "init/error", "{unconfigured:?}");

    let unknown = invoke(&config, &deployed, "nonsense", json!({})).await;
    assert_eq!(unknown.0, "init/error", "{unknown:?}");
}
