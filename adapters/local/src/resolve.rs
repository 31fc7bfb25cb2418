//! DNS resolution for the outbound URL guard, through the system resolver.

use async_trait::async_trait;
use std::net::IpAddr;
use wharf_core::CoreError;
use wharf_core::ports::Resolver;

/// Resolves with `tokio::net::lookup_host`.
pub struct SystemResolver;

#[async_trait]
impl Resolver for SystemResolver {
    async fn resolve(&self, host: &str, port: u16) -> Result<Vec<IpAddr>, CoreError> {
        let lookup = tokio::net::lookup_host((host, port));
        match tokio::time::timeout(std::time::Duration::from_secs(5), lookup).await {
            Ok(Ok(addrs)) => Ok(addrs.map(|a| a.ip()).collect()),
            Ok(Err(e)) => Err(CoreError::unavailable(e.to_string())),
            Err(_) => Err(CoreError::unavailable("DNS lookup timed out")),
        }
    }
}
