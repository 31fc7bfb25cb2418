//! The `Sockets` port on API Gateway's WebSocket API: connections are items of the table
//! (see `store::fanout`), and records are posted with the management API's
//! `PostToConnection`. A function that only records connections (the `websocket` handler) has
//! no management endpoint and does not post.

use crate::{Clients, DynamoStore, aws_error};
use async_trait::async_trait;
use aws_sdk_apigatewaymanagement::primitives::Blob;
use wharf_core::domain::Connection;
use wharf_core::ports::{Result, Sockets};
use wharf_core::{SubscriptionId, TenantId};

/// API Gateway's connections of websocket subscriptions.
pub struct GatewaySockets {
    store: DynamoStore,
    api: Option<aws_sdk_apigatewaymanagement::Client>,
}

impl GatewaySockets {
    /// Connections in the table of `clients`, posted to through the management API at
    /// `endpoint` (`https://{api}.execute-api.{region}.amazonaws.com/{stage}`) when given.
    pub fn new(clients: &Clients, endpoint: Option<&str>) -> GatewaySockets {
        GatewaySockets {
            store: DynamoStore::new(clients.clone()),
            api: endpoint.map(|e| clients.websocket(e)),
        }
    }
}

#[async_trait]
impl Sockets for GatewaySockets {
    async fn connect(&self, connection: &Connection) -> Result<()> {
        self.store.put_connection(connection).await
    }

    async fn disconnect(&self, connection: &str) -> Result<Option<Connection>> {
        self.store.delete_connection(connection).await
    }

    async fn connections_of(
        &self,
        tenant: &TenantId,
        sub: &SubscriptionId,
    ) -> Result<Vec<Connection>> {
        self.store.connections_of(tenant, sub).await
    }

    async fn connection(&self, connection: &str) -> Result<Option<Connection>> {
        self.store.connection(connection).await
    }

    async fn close(&self, connection: &str) -> Result<()> {
        if let Some(api) = &self.api {
            let closed = api
                .delete_connection()
                .connection_id(connection)
                .send()
                .await;
            if let Err(e) = closed {
                let gone = e.as_service_error().is_some_and(|s| s.is_gone_exception());
                if !gone {
                    return Err(aws_error("closing a socket", e));
                }
            }
        }
        self.store.delete_connection(connection).await.map(|_| ())
    }

    fn posts(&self) -> bool {
        self.api.is_some()
    }

    async fn post(&self, connection: &str, frames: &[Vec<u8>]) -> Result<bool> {
        let Some(api) = &self.api else {
            return Err(wharf_core::CoreError::internal(
                "no management endpoint to post to sockets through",
            ));
        };
        for frame in frames {
            let sent = api
                .post_to_connection()
                .connection_id(connection)
                .data(Blob::new(frame.clone()))
                .send()
                .await;
            if let Err(e) = sent {
                let gone = e.as_service_error().is_some_and(|s| s.is_gone_exception())
                    || e.raw_response().is_some_and(|r| r.status().as_u16() == 410);
                return if gone {
                    Ok(false)
                } else {
                    Err(aws_error("posting to a socket", e))
                };
            }
        }
        Ok(true)
    }
}
