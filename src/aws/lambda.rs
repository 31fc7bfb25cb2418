//! The Lambda entry point: the `wharf` binary is the bootstrap of every function. With
//! `AWS_LAMBDA_RUNTIME_API` set it runs the handler `_HANDLER` names: `api` (the REST API's
//! axum router through lambda_http), or `ingest`, `stream`, `sender`, `websocket` and
//! `schedule` (through lambda_runtime: each event decoded by `wharf_aws::lambda`, handled by
//! `wharf_workers::handlers`, and answered). The services are built once per cold start and
//! shared by every invocation.

use super::{Resources, aws_shape};
use crate::config::Config;
use aws_lambda_events::event::apigw::ApiGatewayWebsocketProxyRequest;
use aws_lambda_events::event::dynamodb::Event as StreamEvent;
use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use aws_lambda_events::event::sqs::SqsEvent;
use lambda_runtime::{LambdaEvent, service_fn};
use std::sync::Arc;
use wharf_aws::lambda::{
    queue_messages, socket_event, socket_response, sqs_response, stream_changes, stream_response,
    tick,
};
use wharf_core::ports::{EventHandlers, SystemClock};
use wharf_workers::handlers::{Deliveries, Handlers};

/// The handlers a function may name.
pub const HANDLERS: [&str; 6] = ["api", "ingest", "stream", "sender", "websocket", "schedule"];

/// Whether this process was started by Lambda.
pub fn is_lambda() -> bool {
    std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some()
}

/// Runs the handler `_HANDLER` names until Lambda ends the process. A cold start that fails
/// is reported to the Runtime API's init error endpoint, so Lambda shows why.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let handler = std::env::var("_HANDLER").unwrap_or_default();
    let shape = match cold_start(&config, &handler).await {
        Ok(shape) => shape,
        Err(e) => {
            let message = format!("{e:#}");
            tracing::error!(error = %message, "cold start failed");
            if let Err(report) = report_init_error(&message) {
                tracing::error!(error = %report, "cannot report the failed cold start");
            }
            return Err(e);
        }
    };
    tracing::info!(handler, "cold start done");
    if handler == "api" {
        let api = tower::ServiceExt::map_request(
            wharf_api::router(shape.services),
            |mut req: lambda_http::Request| {
                if let Some(address) = source_address(&req) {
                    let peer = std::net::SocketAddr::new(address, 0);
                    req.extensions_mut()
                        .insert(axum::extract::ConnectInfo(peer));
                }
                req
            },
        );
        return lambda_http::run(api)
            .await
            .map_err(|e| anyhow::anyhow!("the Lambda runtime stopped: {e}"));
    }
    let handlers = Arc::new(Handlers::new(
        shape.services,
        config.delivery(),
        Deliveries::Awaited,
    ));
    serve(&handler, handlers)
        .await
        .map_err(|e| anyhow::anyhow!("the Lambda runtime stopped: {e}"))
}

/// Serves one of the event handlers: Lambda's event decoded, handled, and answered.
async fn serve(handler: &str, handlers: Arc<Handlers>) -> Result<(), lambda_runtime::Error> {
    let h = handlers;
    match handler {
        "ingest" => {
            lambda_runtime::run(service_fn(move |e: LambdaEvent<SqsEvent>| {
                let h = h.clone();
                async move { ok(sqs_response(h.ingest(queue_messages(e.payload)).await)) }
            }))
            .await
        }
        "sender" => {
            lambda_runtime::run(service_fn(move |e: LambdaEvent<SqsEvent>| {
                let h = h.clone();
                async move { ok(sqs_response(h.sender(queue_messages(e.payload)).await)) }
            }))
            .await
        }
        "stream" => {
            lambda_runtime::run(service_fn(move |e: LambdaEvent<StreamEvent>| {
                let h = h.clone();
                async move { ok(stream_response(h.stream(stream_changes(e.payload)).await)) }
            }))
            .await
        }
        "websocket" => {
            lambda_runtime::run(service_fn(
                move |e: LambdaEvent<ApiGatewayWebsocketProxyRequest>| {
                    let h = h.clone();
                    async move { ok(socket_response(h.websocket(socket_event(&e.payload)).await)) }
                },
            ))
            .await
        }
        _ => {
            lambda_runtime::run(service_fn(move |e: LambdaEvent<EventBridgeEvent>| {
                let h = h.clone();
                async move {
                    h.schedule(tick(&e.payload))
                        .await
                        .map_err(|e| lambda_runtime::Error::from(e.to_string()))
                }
            }))
            .await
        }
    }
}

fn ok<T>(answer: T) -> Result<T, lambda_runtime::Error> {
    Ok(answer)
}

async fn cold_start(config: &Config, handler: &str) -> anyhow::Result<super::AwsShape> {
    if !HANDLERS.contains(&handler) {
        anyhow::bail!(
            "_HANDLER is {handler:?}; it must name one of {}",
            HANDLERS.join(", ")
        );
    }
    aws_shape(config, Arc::new(SystemClock), Resources::Configured).await
}

/// Posts `message` to `/runtime/init/error` of the Runtime API (plain HTTP/1.1 on the
/// address Lambda gives; the runtime client is not running yet).
fn report_init_error(message: &str) -> std::io::Result<()> {
    use std::io::{Read, Write};
    let api = std::env::var("AWS_LAMBDA_RUNTIME_API").map_err(std::io::Error::other)?;
    let body =
        serde_json::json!({"errorMessage": message, "errorType": "Runtime.InitError"}).to_string();
    let mut stream = std::net::TcpStream::connect(&api)?;
    stream.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
    write!(
        stream,
        "POST /2018-06-01/runtime/init/error HTTP/1.1\r\nHost: {api}\r\n\
         Lambda-Runtime-Function-Error-Type: Runtime.InitError\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut answer = [0u8; 64];
    let _ = stream.read(&mut answer)?;
    Ok(())
}

/// The client's address as API Gateway saw it (what throttles count by).
fn source_address(req: &lambda_http::Request) -> Option<std::net::IpAddr> {
    use lambda_http::RequestExt;
    use lambda_http::request::RequestContext;
    let ip = match req.request_context_ref()? {
        RequestContext::ApiGatewayV2(ctx) => ctx.http.source_ip.clone(),
        RequestContext::ApiGatewayV1(ctx) => ctx.identity.source_ip.clone(),
        _ => None,
    }?;
    ip.parse().ok()
}
