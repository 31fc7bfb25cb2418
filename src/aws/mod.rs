//! The aws shape's composition: the services on DynamoDB, SQS, SNS, Cognito and S3, built
//! once per process or Lambda cold start. The handlers are `wharf_workers::handlers`; the
//! Lambda entry is `lambda`; the event-source stand-ins of `wharf serve --backend aws` are
//! `wharf_aws::emulate`.

pub mod lambda;

use crate::config::Config;
use anyhow::Context;
use std::sync::Arc;
use wharf_aws::cognito::{CognitoIdentity, UserPool};
use wharf_aws::emulate::Queues;
use wharf_aws::fanout::SnsFanout;
use wharf_aws::ingest::{SqsIngestQueue, SqsSourceQueues};
use wharf_aws::sockets::GatewaySockets;
use wharf_aws::{AwsSettings, Clients, DynamoStore};
use wharf_core::Services;
use wharf_core::domain::Shape;
use wharf_core::ports::{Clock, SystemClock};
use wharf_local::{FileSecretBox, HttpWebhookSender, SystemResolver};

/// The aws shape's services and where its resources are.
#[derive(Clone)]
pub struct AwsShape {
    /// The services, on the aws adapters.
    pub services: Services,
    /// The AWS clients (and their call counts).
    pub clients: Clients,
    /// The queues the event sources read.
    pub queues: Queues,
}

/// How the resources are found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resources {
    /// Create what is missing (`wharf aws bootstrap`'s work): an emulator or a dev account.
    Bootstrap,
    /// Everything is named in the configuration (Lambda, deployed by the template).
    Configured,
}

/// The clients for `config.aws`.
pub async fn clients(config: &Config) -> Clients {
    let aws = &config.aws;
    Clients::connect(AwsSettings {
        endpoint_url: aws.endpoint_url.clone(),
        region: aws.region.clone(),
        table: aws.table.clone(),
        queue_prefix: aws.queue_prefix.clone(),
        bucket: aws.bucket.clone(),
        credentials: aws
            .access_key_id
            .clone()
            .zip(aws.secret_access_key.as_ref().map(|s| s.0.clone())),
    })
    .await
}

/// The user pool and the ingest and delivery queues, made where missing.
async fn bootstrap(
    clients: &Clients,
    pool_name: &str,
) -> anyhow::Result<(UserPool, String, String)> {
    let done = wharf_aws::bootstrap::bootstrap(clients)
        .await
        .context("cannot create the table and queues")?;
    let pool = wharf_aws::cognito::bootstrap_user_pool(clients, pool_name)
        .await
        .context("cannot create the user pool")?;
    wharf_aws::s3::bootstrap_bucket(clients)
        .await
        .context("cannot create the object bucket")?;
    Ok((pool, done.ingest_queue_url, done.delivery_queue_url))
}

/// The user pool and the ingest and delivery queues, as the configuration names them.
fn configured(aws: &crate::config::AwsConfig) -> anyhow::Result<(UserPool, String, String)> {
    let missing = |name: &str| anyhow::anyhow!("`aws.{name}` must be set on Lambda");
    let pool = UserPool {
        pool_id: aws
            .user_pool_id
            .clone()
            .ok_or_else(|| missing("user_pool_id"))?,
        client_id: aws.client_id.clone().ok_or_else(|| missing("client_id"))?,
    };
    let queue = aws
        .ingest_queue_url
        .clone()
        .ok_or_else(|| missing("ingest_queue_url"))?;
    let delivery = aws
        .delivery_queue_url
        .clone()
        .ok_or_else(|| missing("delivery_queue_url"))?;
    Ok((pool, queue, delivery))
}

/// The key sealing webhook secrets: configured (required on Lambda), or kept in the data
/// dir.
fn secret_box(config: &Config, resources: Resources) -> anyhow::Result<FileSecretBox> {
    Ok(match &config.aws.secret_key {
        Some(key) => FileSecretBox::from_encoded_key(&key.0).context("invalid `aws.secret_key`")?,
        None if resources == Resources::Configured => {
            anyhow::bail!("`aws.secret_key` must be set on Lambda")
        }
        None => {
            wharf_local::create_private_dir(&config.data_dir).with_context(|| {
                format!("cannot create the data dir {}", config.data_dir.display())
            })?;
            FileSecretBox::load_or_create(&config.data_dir).context("cannot load the secret key")?
        }
    })
}

/// Builds the aws shape's services once (per process, or per Lambda cold start).
pub async fn aws_shape(
    config: &Config,
    clock: Arc<dyn Clock>,
    resources: Resources,
) -> anyhow::Result<AwsShape> {
    let clients = clients(config).await;
    let aws = &config.aws;
    let (pool, ingest_queue_url, delivery_queue_url) = match resources {
        Resources::Bootstrap => bootstrap(&clients, &aws.user_pool_name).await?,
        Resources::Configured => configured(aws)?,
    };
    // Cognito issues tokens on real time, whatever clock the business runs on.
    let identity = CognitoIdentity::new(&clients, pool, Arc::new(SystemClock))
        .await
        .context("cannot reach the user pool")?;
    let secrets = secret_box(config, resources)?;
    // On Lambda the functions record a gateway's sockets, and those that know the management
    // endpoint (the stream function) post to them; `wharf serve` serves sockets itself unless
    // it is given a management endpoint too.
    let sockets: Option<Arc<dyn wharf_core::ports::Sockets>> =
        match (resources, aws.websocket_endpoint.as_deref()) {
            (_, Some(endpoint)) => Some(Arc::new(GatewaySockets::new(&clients, Some(endpoint)))),
            (Resources::Configured, None) => Some(Arc::new(GatewaySockets::new(&clients, None))),
            (Resources::Bootstrap, None) => None,
        };
    let services = Services {
        store: Arc::new(DynamoStore::new(clients.clone())),
        identity: Arc::new(identity),
        clock,
        resolver: Arc::new(SystemResolver),
        secrets: Arc::new(secrets),
        notifier: Arc::new(wharf_workers::wake::Wakers::default()),
        http: Arc::new(HttpWebhookSender::new(
            config.egress().map_err(anyhow::Error::msg)?,
        )?),
        mailer: crate::app::mailer(config)?,
        compute: Arc::new(wharf_workers::compute::Lanes::per_core()),
        throttle: Arc::default(),
        payments: crate::app::payments(config)?,
        ingest_queue: Some(Arc::new(SqsIngestQueue::new(
            &clients,
            ingest_queue_url.clone(),
        ))),
        source_queues: Some(Arc::new(SqsSourceQueues::new(&clients))),
        fanout: Some(Arc::new(SnsFanout::new(
            &clients,
            delivery_queue_url.clone(),
        ))),
        sockets,
        models: crate::app::models(config, Arc::new(wharf_aws::s3::S3Objects::new(&clients))),
        metrics: vec![Arc::new(clients.calls.clone())],
        settings: crate::app::settings(config, Shape::Aws)?,
    };
    Ok(AwsShape {
        services,
        clients,
        queues: Queues {
            ingest: ingest_queue_url,
            delivery: delivery_queue_url,
        },
    })
}
