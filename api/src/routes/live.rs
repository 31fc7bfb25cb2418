//! The live channel: a WebSocket carrying a websocket subscription's records as they are
//! produced, each as a text message `{"cursor", "record"}`. A client resumes after a cursor
//! with `?after=`; without it the socket continues after the last record pushed. Records
//! count as delivered once each, after they were written to the socket. Browsers cannot set
//! headers on a WebSocket, so the token may also come as `?access_token=`.

use crate::AppState;
use crate::extract::{ApiPath, ApiQuery};
use crate::problem::{ApiError, ReadErrors};
use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::http::HeaderMap;
use axum::response::Response;
use serde::Deserialize;
use std::time::Duration;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use wharf_core::domain::Subscription;
use wharf_core::{CoreError, Services, SubscriptionId};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(live))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct LiveQuery {
    /// Resume after this cursor (from an earlier message).
    after: Option<String>,
    /// The bearer token, for clients that cannot set the Authorization header.
    access_token: Option<String>,
}

const POLL: Duration = Duration::from_millis(200);
const BATCH: usize = 200;

/// Live records over a WebSocket (websocket subscriptions).
///
/// Upgrade with `Authorization: Bearer …` or `?access_token=`. Each message is
/// `{"cursor": "…", "record": {…}}`; reconnect with `?after=<cursor>` to resume with no gap.
#[utoipa::path(get, path = "/v1/subscriptions/{id}/live", tag = "subscriptions", params(("id" = SubscriptionId, Path), LiveQuery),
    security(("bearer" = [])), responses((status = 101, description = "Switching to the WebSocket protocol"), ReadErrors))]
async fn live(
    State(s): State<AppState>,
    ApiPath(id): ApiPath<SubscriptionId>,
    ApiQuery(q): ApiQuery<LiveQuery>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let header_token = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(wharf_core::credentials::bearer)
        .map(str::to_owned);
    let token = header_token
        .or(q.access_token)
        .ok_or_else(|| CoreError::Unauthenticated("missing bearer token".into()))?;
    let who = s.services.authenticate(&token).await?;
    let (sub, after) = s.services.live_open(&who, &id, q.after.as_deref()).await?;
    let upgrade = upgrade
        .map_err(|_| CoreError::invalid("upgrade", "this endpoint only speaks WebSocket"))?;
    let services = s.services.clone();
    Ok(upgrade.on_upgrade(move |socket| async move {
        if let Err(e) = stream(socket, &services, &sub, after).await {
            tracing::debug!(subscription.id = %sub.id, error = %e, "live socket closed");
        }
    }))
}

async fn stream(
    mut socket: WebSocket,
    services: &Services,
    sub: &Subscription,
    mut after: u64,
) -> Result<(), CoreError> {
    loop {
        let (items, reached) = services.live_read(sub, after, BATCH).await?;
        for (position, record) in &items {
            let message = serde_json::json!({"cursor": position.to_string(), "record": record});
            if socket
                .send(Message::Text(message.to_string().into()))
                .await
                .is_err()
            {
                // Count what the socket took before it closed.
                let sent: Vec<_> = items
                    .iter()
                    .filter(|(p, _)| p < position)
                    .cloned()
                    .collect();
                let reached_sent = sent.last().map_or(after, |(p, _)| *p);
                return services.live_acknowledge(sub, &sent, reached_sent).await;
            }
        }
        services.live_acknowledge(sub, &items, reached).await?;
        if reached > after {
            after = reached;
            continue;
        }
        // Idle: wait for more, while noticing a client that closes.
        tokio::select! {
            incoming = socket.recv() => match incoming {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return Ok(()),
                Some(Ok(_)) => {}
            },
            _ = tokio::time::sleep(POLL) => {}
        }
    }
}
