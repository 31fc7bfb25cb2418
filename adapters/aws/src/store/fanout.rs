//! What the aws shape's output side keeps beside the ports: how far each feed's topic has
//! been published, and the API Gateway WebSocket connections of websocket subscriptions.
//!
//! - `T#{tenant}` / `TOPIC#{feed}`: `pos`, the last output position published to the topic;
//! - `T#{tenant}#WS#{sub}` / `CONN#{connection}`: a connection of a subscription, and
//!   `WSCONN#{connection}` / `WSCONN` its lookup by connection id (API Gateway names only the
//!   connection when it disconnects).

use super::accounts::tenant_pk;
use super::*;
use wharf_core::domain::Connection;
use wharf_core::{FeedId, SubscriptionId, TenantId};

fn topic_sk(feed: &FeedId) -> String {
    format!("TOPIC#{feed}")
}

fn sockets_pk(tenant: &TenantId, sub: &SubscriptionId) -> String {
    format!("T#{tenant}#WS#{sub}")
}

fn lookup_pk(connection: &str) -> String {
    format!("WSCONN#{connection}")
}

impl DynamoStore {
    /// The last output position published to a feed's topic; `None` before the first.
    pub async fn topic_position(&self, tenant: &TenantId, feed: &FeedId) -> Result<Option<u64>> {
        match self.get(&tenant_pk(tenant), &topic_sk(feed)).await? {
            Some(item) => num_attr(&item, "pos").map(Some),
            None => Ok(None),
        }
    }

    /// Moves a feed's topic position from `from` (`None`: not started) to `to`; `false` when
    /// another publisher moved it first.
    pub async fn move_topic_position(
        &self,
        tenant: &TenantId,
        feed: &FeedId,
        from: Option<u64>,
        to: u64,
    ) -> Result<bool> {
        let mut item = key(tenant_pk(tenant), topic_sk(feed));
        item.insert("kind".into(), s("topic"));
        item.insert("pos".into(), n(to));
        let request = self
            .db()
            .put_item()
            .table_name(self.table())
            .set_item(Some(item));
        let request = match from {
            Some(from) => request
                .condition_expression("pos = :from")
                .expression_attribute_values(":from", n(from)),
            None => request.condition_expression("attribute_not_exists(pk)"),
        };
        written(request.send().await, "moving a topic position")
    }

    /// Stores a connection and its lookup.
    pub async fn put_connection(&self, c: &Connection) -> Result<()> {
        let mut stored = item(
            sockets_pk(&c.tenant_id, &c.subscription_id),
            format!("CONN#{}", c.id),
            "connection",
            c,
        )?;
        // Sockets API Gateway never reported closed go after a day (its own limit is 2 h).
        let expires = c.connected_at.unix_timestamp() + 24 * 3600;
        stored.insert(crate::bootstrap::TTL_ATTRIBUTE.into(), n(expires));
        let mut lookup = item(lookup_pk(&c.id), "WSCONN", "connection", c)?;
        lookup.insert(crate::bootstrap::TTL_ATTRIBUTE.into(), n(expires));
        self.put_all(vec![stored, lookup]).await
    }

    /// A connection, if it is known.
    pub async fn connection(&self, id: &str) -> Result<Option<Connection>> {
        match self.get(&lookup_pk(id), "WSCONN").await? {
            Some(found) => Ok(Some(from_item(&found)?)),
            None => Ok(None),
        }
    }

    /// Removes a connection; answers what it was, if it was known.
    pub async fn delete_connection(&self, id: &str) -> Result<Option<Connection>> {
        let Some(found) = self.get(&lookup_pk(id), "WSCONN").await? else {
            return Ok(None);
        };
        let c: Connection = from_item(&found)?;
        self.delete(
            &sockets_pk(&c.tenant_id, &c.subscription_id),
            &format!("CONN#{id}"),
        )
        .await?;
        self.delete(&lookup_pk(id), "WSCONN").await?;
        Ok(Some(c))
    }

    /// The open connections of a subscription.
    pub async fn connections_of(
        &self,
        tenant: &TenantId,
        sub: &SubscriptionId,
    ) -> Result<Vec<Connection>> {
        self.query_all(&Query::table(sockets_pk(tenant, sub)), None)
            .await?
            .iter()
            .map(from_item)
            .collect()
    }
}
