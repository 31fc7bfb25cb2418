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
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use wharf_core::domain::Subscription;
use wharf_core::{CoreError, Services, SubscriptionId, Timestamp};

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

/// How long an idle socket waits for its feed before looking again anyway (a paused
/// subscription resumed, a wake-up missed).
const FALLBACK: Duration = Duration::from_secs(5);
/// An idle socket is pinged this often, so idle-connection timeouts leave it open.
const PING: Duration = Duration::from_secs(30);
const BATCH: usize = 200;
/// The close code of a socket whose token expired or was refused.
const TOKEN_CLOSE: u16 = 4001;

/// Live records over a WebSocket (websocket subscriptions).
///
/// Upgrade with `Authorization: Bearer …` or `?access_token=`. Each message is
/// `{"cursor": "…", "record": {…}}`; reconnect with `?after=<cursor>` to resume with no gap.
/// The socket closes (code 4001) when the token expires; send
/// `{"type": "token", "token": "<new access token>"}` before then to keep it open. At most
/// `sockets_per_subscription` sockets per subscription are open at once (409 beyond).
#[utoipa::path(get, path = "/v1/subscriptions/{id}/live", tag = "subscriptions", params(("id" = SubscriptionId, Path), LiveQuery),
    security(("bearer" = [])), responses((status = 101, description = "Switching to the WebSocket protocol"),
    (status = 409, description = "Not a websocket subscription, cancelled, or `sockets_per_subscription` open already"), ReadErrors))]
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
    let expires = wharf_core::credentials::verified_token_expiry(&token);
    let (sub, after) = s.services.live_open(&who, &id, q.after.as_deref()).await?;
    let upgrade = upgrade
        .map_err(|_| CoreError::invalid("upgrade", "this endpoint only speaks WebSocket"))?;
    let open = s.sockets.open(&s.services, &sub.id)?;
    let services = s.services.clone();
    Ok(upgrade.on_upgrade(move |socket| async move {
        let live = Live {
            services: &services,
            sub: &sub,
            expires,
        };
        if let Err(e) = live.stream(socket, after).await {
            tracing::debug!(subscription.id = %sub.id, error = %e, "live socket closed");
        }
        drop(open);
    }))
}

/// The open live sockets of each subscription in this process.
#[derive(Clone, Default)]
pub struct OpenSockets(Arc<Mutex<HashMap<SubscriptionId, usize>>>);

/// One open socket, counted until dropped.
pub struct OpenSocket {
    sockets: OpenSockets,
    sub: SubscriptionId,
}

impl OpenSockets {
    /// Counts one more socket of `sub`, unless its quota is reached.
    fn open(&self, services: &Services, sub: &SubscriptionId) -> Result<OpenSocket, CoreError> {
        let mut open = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let n = open.entry(sub.clone()).or_default();
        services.room_for_socket(*n)?;
        *n += 1;
        Ok(OpenSocket {
            sockets: self.clone(),
            sub: sub.clone(),
        })
    }
}

impl Drop for OpenSocket {
    fn drop(&mut self) {
        let mut open = self
            .sockets
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = open.get_mut(&self.sub) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.sub);
            }
        }
    }
}

/// A socket's subscription and until when its token lets it read.
struct Live<'a> {
    services: &'a Services,
    sub: &'a Subscription,
    expires: Option<Timestamp>,
}

/// What the client may send: a fresh token.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ClientMessage {
    Token { token: String },
}

impl Live<'_> {
    /// How long the token still lets the socket read (`None`: as long as it likes).
    fn left(&self) -> Option<Duration> {
        self.expires.map(|at| {
            (at - self.services.clock.now())
                .max(time::Duration::ZERO)
                .unsigned_abs()
        })
    }

    async fn stream(mut self, mut socket: WebSocket, mut after: u64) -> Result<(), CoreError> {
        loop {
            if self.left().is_some_and(|left| left.is_zero()) {
                return close(socket, "token expired").await;
            }
            after = match self.send(&mut socket, after).await? {
                Sent::More(reached) => {
                    after = reached;
                    continue;
                }
                Sent::Closed => return Ok(()),
                Sent::CaughtUp(reached) => reached,
            };
            let expiry = tokio::time::sleep(self.left().unwrap_or(Duration::from_secs(86_400)));
            tokio::select! {
                incoming = socket.recv() => match incoming {
                    None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return Ok(()),
                    Some(Ok(Message::Text(text))) => {
                        if !self.renew(&text).await {
                            return close(socket, "token refused").await;
                        }
                    }
                    Some(Ok(_)) => {}
                },
                () = self.services.notifier.feed_changed(&self.sub.feed_id, FALLBACK) => {}
                () = expiry => return close(socket, "token expired").await,
                () = tokio::time::sleep(PING) => {
                    if socket.send(Message::Ping(Vec::new().into())).await.is_err() {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// Takes a fresh token from the client; `false` when it is not one that may read.
    async fn renew(&mut self, text: &str) -> bool {
        let Ok(ClientMessage::Token { token }) = serde_json::from_str(text) else {
            return true;
        };
        match self.services.live_token(self.sub, &token).await {
            Ok(expires) => {
                self.expires = expires;
                true
            }
            Err(_) => false,
        }
    }

    /// Sends the records after `after`, counting what the socket took.
    async fn send(&self, socket: &mut WebSocket, after: u64) -> Result<Sent, CoreError> {
        let (services, sub) = (self.services, self.sub);
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
                services.live_acknowledge(sub, &sent, reached_sent).await?;
                return Ok(Sent::Closed);
            }
        }
        services.live_acknowledge(sub, &items, reached).await?;
        Ok(if reached > after {
            Sent::More(reached)
        } else {
            Sent::CaughtUp(reached)
        })
    }
}

/// What a round of sending did.
enum Sent {
    /// Records went out up to this position; there may be more.
    More(u64),
    /// Nothing new after this position.
    CaughtUp(u64),
    /// The client went away.
    Closed,
}

/// Closes the socket with the token close code and `reason`.
async fn close(mut socket: WebSocket, reason: &'static str) -> Result<(), CoreError> {
    let frame = axum::extract::ws::CloseFrame {
        code: TOKEN_CLOSE,
        reason: reason.into(),
    };
    let _ = socket.send(Message::Close(Some(frame))).await;
    Ok(())
}
