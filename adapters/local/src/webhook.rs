//! The webhook and poll client: HTTP through a resolver that drops loopback, private,
//! link-local and metadata addresses at connect time (unless the operator allows them), and
//! every address outside the operator's egress allow-list, so a host that passed the check
//! when the subscription was saved cannot later be re-pointed inside the network.
//! Redirects are not followed; a webhook answer's body is not read.

use async_trait::async_trait;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use wharf_core::CoreError;
use wharf_core::domain::SendOutcome;
use wharf_core::net::{Egress, literal_address};
use wharf_core::ports::OutboundHttp;

struct GuardedResolver {
    egress: Arc<Egress>,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let egress = Arc::clone(&self.egress);
        Box::pin(async move {
            let found = tokio::net::lookup_host((name.as_str(), 0)).await?;
            let allowed: Vec<SocketAddr> =
                found.filter(|a| egress.refuses(a.ip()).is_none()).collect();
            if allowed.is_empty() {
                return Err("the host resolves only to addresses Wharf may not reach".into());
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

/// Sends webhooks over a shared connection pool.
pub struct HttpWebhookSender {
    client: reqwest::Client,
    egress: Arc<Egress>,
}

impl HttpWebhookSender {
    /// A sender that connects only where `egress` permits.
    pub fn new(egress: Egress) -> Result<Self, wharf_core::CoreError> {
        let egress = Arc::new(egress);
        let client = reqwest::Client::builder()
            .dns_resolver(Arc::new(GuardedResolver {
                egress: Arc::clone(&egress),
            }))
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5))
            .pool_max_idle_per_host(64)
            .user_agent(concat!("Wharf-Webhooks/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(wharf_core::CoreError::internal)?;
        Ok(HttpWebhookSender { client, egress })
    }
}

#[async_trait]
impl OutboundHttp for HttpWebhookSender {
    async fn post(
        &self,
        url: &str,
        headers: &[(String, String)],
        body: Vec<u8>,
        timeout: Duration,
    ) -> SendOutcome {
        let parsed = match reqwest::Url::parse(url) {
            Ok(u) => u,
            Err(e) => return SendOutcome::Failed(format!("bad URL: {e}")),
        };
        if let Some(why) = self.refused(&parsed) {
            return SendOutcome::Failed(format!("{why}; webhooks may not reach it"));
        }
        let mut request = self.client.post(parsed).timeout(timeout).body(body);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        match request.send().await {
            Ok(response) => {
                let retry_after = response
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok());
                SendOutcome::Answered {
                    status: response.status().as_u16(),
                    retry_after,
                }
            }
            Err(e) if e.is_timeout() => {
                SendOutcome::Failed(format!("no answer within {} s", timeout.as_secs()))
            }
            Err(e) if e.is_connect() => SendOutcome::Failed("could not connect".into()),
            Err(e) => SendOutcome::Failed(format!("request failed: {}", root_cause(&e))),
        }
    }

    async fn get(
        &self,
        url: &str,
        timeout: Duration,
        max_bytes: usize,
    ) -> Result<(u16, Vec<u8>), CoreError> {
        let parsed = self.allowed(url)?;
        self.read_answer(self.client.get(parsed), timeout, max_bytes)
            .await
    }

    async fn exchange(
        &self,
        url: &str,
        headers: &[(String, String)],
        body: Vec<u8>,
        timeout: Duration,
        max_bytes: usize,
    ) -> Result<(u16, Vec<u8>), CoreError> {
        let parsed = self.allowed(url)?;
        let mut request = self.client.post(parsed).body(body);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        self.read_answer(request, timeout, max_bytes).await
    }
}

impl HttpWebhookSender {
    /// `url` parsed, unless the guard refuses the address it names literally.
    fn allowed(&self, url: &str) -> Result<reqwest::Url, CoreError> {
        let parsed = reqwest::Url::parse(url).map_err(|e| failed(format!("bad URL: {e}")))?;
        match self.refused(&parsed) {
            Some(why) => Err(failed(format!("{why}; Wharf may not reach it"))),
            None => Ok(parsed),
        }
    }

    /// Sends `request` within `timeout` and reads at most `max_bytes` of the answer.
    async fn read_answer(
        &self,
        request: reqwest::RequestBuilder,
        timeout: Duration,
        max_bytes: usize,
    ) -> Result<(u16, Vec<u8>), CoreError> {
        let mut response = request.timeout(timeout).send().await.map_err(|e| {
            failed(if e.is_timeout() {
                format!("no answer within {} ms", timeout.as_millis())
            } else {
                format!("request failed: {}", root_cause(&e))
            })
        })?;
        let status = response.status().as_u16();
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| failed(format!("reading the answer failed: {}", root_cause(&e))))?
        {
            if body.len() + chunk.len() > max_bytes {
                return Err(failed(format!(
                    "the answer is larger than {max_bytes} bytes"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        Ok((status, body))
    }

    /// Why the address `url` names literally may not be reached (names are checked when
    /// they resolve).
    fn refused(&self, url: &reqwest::Url) -> Option<String> {
        literal_address(url).and_then(|ip| self.egress.refuses(ip))
    }
}

fn root_cause(e: &dyn std::error::Error) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

/// A fetch that failed: the far end is unavailable to Wharf, for the reason given.
fn failed(reason: impl Into<String>) -> CoreError {
    CoreError::unavailable(reason.into())
}
