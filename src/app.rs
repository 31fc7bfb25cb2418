//! The composition root: picks the adapters from the configuration once, builds the
//! services and the router, and runs the server until a shutdown signal.

use crate::config::{Backend, Config, Durability, SmtpTls};
use crate::local::LocalWorkers;
use anyhow::Context;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use wharf_aws::emulate::Activity;
use wharf_core::domain::{Role, Shape};
use wharf_core::ports::{ChangeLog, Mailer};
use wharf_core::ports::{Clock, SystemClock};
use wharf_core::{CoreError, Services, Settings};
use wharf_local::{
    Db, FileSecretBox, HttpWebhookSender, LocalIdentity, OutboxMailer, SmtpMailer, SmtpSecurity,
    SqliteStore, SystemResolver,
};
use wharf_workers::handlers::{Deliveries, Handlers};
use wharf_workers::supervisor::Supervisor;
use wharf_workers::wake::Wakers;

/// Delivery passes a woken subscription's task makes in the aws shape before it looks again
/// (the local shape's tasks drain until idle).
const AWS_PASSES: usize = 50;

/// The database file inside the data dir.
pub const DB_FILE: &str = "wharf.db";

/// The local shape's services with the handles only the local workers need.
pub struct Local {
    /// The services.
    pub services: Services,
    /// The change log of raw records.
    pub log: Arc<dyn ChangeLog>,
    /// Wakes the workers.
    pub notifier: Arc<Wakers>,
}

/// Opens the local shape's adapters in `config.data_dir` and builds the services.
pub fn local_services(config: &Config) -> anyhow::Result<Services> {
    Ok(local(config, Arc::new(SystemClock))?.services)
}

/// Opens the local shape's adapters with a given clock.
pub fn local(config: &Config, clock: Arc<dyn Clock>) -> anyhow::Result<Local> {
    wharf_local::create_private_dir(&config.data_dir)
        .with_context(|| format!("cannot create the data dir {}", config.data_dir.display()))?;
    let durability = match config.durability {
        Durability::Normal => wharf_local::Durability::Normal,
        Durability::Full => wharf_local::Durability::Full,
    };
    let db =
        Db::open(&config.data_dir.join(DB_FILE), durability).context("cannot open the database")?;
    let issuer = wharf_jwt::LocalIssuer::load_or_create(
        &config.data_dir,
        config.issuer.clone(),
        config.audience.clone(),
        Duration::from_secs(config.access_token_ttl_secs),
    )
    .context("cannot load the token signing key")?;
    let identity = LocalIdentity::new(
        db.clone(),
        issuer,
        clock.clone(),
        Duration::from_secs(config.refresh_token_ttl_secs),
    );
    let store = Arc::new(SqliteStore::new(db));
    let notifier = Arc::new(Wakers::default());
    let services = Services {
        store: store.clone(),
        notifier: notifier.clone(),
        http: Arc::new(HttpWebhookSender::new(
            config.egress().map_err(anyhow::Error::msg)?,
        )?),
        mailer: mailer(config)?,
        compute: Arc::new(wharf_workers::compute::Lanes::per_core()),
        throttle: Arc::default(),
        identity: Arc::new(identity),
        clock,
        resolver: Arc::new(SystemResolver),
        payments: payments(config)?,
        secrets: Arc::new(
            FileSecretBox::load_or_create(&config.data_dir)
                .context("cannot load the secret key")?,
        ),
        ingest_queue: None,
        source_queues: None,
        fanout: None,
        sockets: None,
        models: models(
            config,
            Arc::new(
                wharf_local::objects::FsObjects::open(&config.data_dir.join("objects"))
                    .context("cannot open the object directory")?,
            ),
        ),
        metrics: Vec::new(),
        settings: settings(config, Shape::Local)?,
    };
    Ok(Local {
        services,
        log: store,
        notifier,
    })
}

/// The models of `model` rules: tract, the files in `objects`, `model_cache_mb` of them
/// loaded.
pub fn models(
    config: &Config,
    objects: Arc<dyn wharf_core::ports::ObjectStore>,
) -> Arc<wharf_core::models::Models> {
    let budget =
        usize::try_from(config.model_cache_mb.saturating_mul(1024 * 1024)).unwrap_or(usize::MAX);
    Arc::new(wharf_core::models::Models::new(
        Arc::new(wharf_onnx::TractEngine),
        objects,
        budget,
    ))
}

/// The business settings both shapes share.
pub fn settings(config: &Config, shape: Shape) -> anyhow::Result<Settings> {
    let (platform_fee_percent, vendor_fee_percent) =
        config.fee_percents().map_err(anyhow::Error::msg)?;
    Ok(Settings {
        shape,
        require_vendor_approval: config.require_vendor_approval,
        egress: config.egress().map_err(anyhow::Error::msg)?,
        public_url: config.public_url(),
        secret_overlap: Duration::from_secs(config.secret_overlap_secs),
        log_retention: Duration::from_secs(config.log_retention_days.saturating_mul(86_400)),
        dunning_period: Duration::from_secs(config.dunning_days.saturating_mul(24 * 3600)),
        billing_close_delay: Duration::from_secs(
            config.billing_close_delay_hours.saturating_mul(3600),
        ),
        platform_fee_percent,
        vendor_fee_percent,
        limits: config.limits,
    })
}

/// Stripe, when configured.
pub fn payments(config: &Config) -> anyhow::Result<Option<Arc<dyn wharf_core::ports::Payments>>> {
    Ok(match &config.stripe {
        Some(stripe) => {
            let mut client = wharf_stripe::StripeClient::new(
                &stripe.api_base,
                &stripe.secret_key.0,
                &stripe.webhook_secret.0,
            )?;
            if let Some(connect) = &stripe.connect_webhook_secret {
                client = client.with_connect_webhook_secret(&connect.0);
            }
            Some(Arc::new(client))
        }
        None => None,
    })
}

/// The SMTP mailer when a server is configured, else the outbox in the data dir.
pub fn mailer(config: &Config) -> anyhow::Result<Arc<dyn Mailer>> {
    Ok(match &config.smtp {
        Some(smtp) => {
            let security = match smtp.tls {
                SmtpTls::None => SmtpSecurity::None,
                SmtpTls::Starttls => SmtpSecurity::StartTls,
                SmtpTls::Tls => SmtpSecurity::Tls,
            };
            check_mail_egress(config, &smtp.host, smtp.port)?;
            let credentials = smtp
                .username
                .clone()
                .zip(smtp.password.as_ref().map(|p| p.0.clone()));
            Arc::new(SmtpMailer::new(
                &smtp.host,
                smtp.port,
                security,
                credentials,
                &config.mail_from,
            )?)
        }
        None => Arc::new(OutboxMailer::new(
            config.data_dir.join("outbox"),
            &config.mail_from,
        )?),
    })
}

/// Refuses to start when the egress allow-list leaves out the mail server: mail would
/// otherwise fail one message at a time. The mail server is the operator's own, so it may be
/// on a private network.
fn check_mail_egress(config: &Config, host: &str, port: u16) -> anyhow::Result<()> {
    use std::net::ToSocketAddrs;
    let mut egress = config.egress().map_err(anyhow::Error::msg)?;
    if egress.only.is_none() {
        return Ok(());
    }
    egress.allow_private = true;
    let addrs: Vec<std::net::IpAddr> = (host, port)
        .to_socket_addrs()
        .with_context(|| format!("the mail server `{host}` does not resolve"))?
        .map(|a| a.ip())
        .collect();
    match egress.refuses_all(&addrs) {
        Some(why) => anyhow::bail!("the mail server `{host}` may not be reached: {why}"),
        None => Ok(()),
    }
}

/// Creates the configured bootstrap admin unless that email already has an account.
pub async fn bootstrap_admin(services: &Services, config: &Config) -> anyhow::Result<()> {
    let Some(admin) = &config.admin else {
        return Ok(());
    };
    match services
        .create_platform_user(&admin.email, &admin.password.0, Role::PlatformAdmin)
        .await
    {
        Ok(user) => tracing::info!(user.id = %user.id, "created the bootstrap platform admin"),
        Err(CoreError::Conflict(_)) => {}
        Err(e) => return Err(e).context("cannot create the bootstrap admin"),
    }
    Ok(())
}

/// What runs the pipeline beside the API.
enum Workers {
    /// The local shape's loops, following the change log.
    Local(Arc<LocalWorkers>),
    /// The aws shape's handlers, fed by stand-ins for Lambda's event sources.
    Aws(Box<AwsWorkers>),
}

/// The aws shape's handlers and what drives and watches them.
struct AwsWorkers {
    shape: crate::aws::AwsShape,
    supervisor: Supervisor,
    activity: Arc<Activity>,
}

/// A server bound to its address, not yet serving.
pub struct Server {
    listener: TcpListener,
    router: axum::Router,
    connections: crate::serve::ConnectionLimits,
    workers: Workers,
    delivery: wharf_workers::deliver::DeliveryConfig,
    data_dir: std::path::PathBuf,
    /// The services the server runs on.
    pub services: Services,
}

impl Server {
    /// Builds everything and binds `config.listen`.
    /// The clock is the system's, or with `clock_start` one that starts there.
    pub async fn bind(config: &Config) -> anyhow::Result<Server> {
        let clock: Arc<dyn Clock> = match config.clock_start().map_err(anyhow::Error::msg)? {
            Some(start) => {
                tracing::warn!(%start, "the clock starts at clock_start (tests and demos only)");
                Arc::new(StartedClock::new(start))
            }
            None => Arc::new(SystemClock),
        };
        Self::bind_with_clock(config, clock).await
    }

    /// Builds everything on `clock` (tests move time forward with it) and binds.
    pub async fn bind_with_clock(config: &Config, clock: Arc<dyn Clock>) -> anyhow::Result<Server> {
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        // Links in mail name the address actually bound (a `listen` port of 0 picks one).
        let mut bound = config.clone();
        if bound.public_url.is_none() {
            bound.public_url = Some(format!("http://{}", listener.local_addr()?));
        }
        let config = &bound;
        let (services, workers) = match config.backend {
            Backend::Local => {
                let Local {
                    services,
                    log,
                    notifier,
                } = local(config, clock)?;
                let workers = LocalWorkers::new(services.clone(), log, notifier, config.delivery());
                (services, Workers::Local(workers))
            }
            Backend::Aws => {
                let shape =
                    crate::aws::aws_shape(config, clock, crate::aws::Resources::Bootstrap).await?;
                let supervisor =
                    Supervisor::new(shape.services.clone(), config.delivery(), AWS_PASSES);
                let workers = Workers::Aws(Box::new(AwsWorkers {
                    shape: shape.clone(),
                    supervisor,
                    activity: Arc::default(),
                }));
                (shape.services, workers)
            }
        };
        bootstrap_admin(&services, config).await?;
        let router = wharf_api::router(services.clone());
        Ok(Server {
            listener,
            router,
            connections: config.connections,
            services,
            workers,
            delivery: config.delivery(),
            data_dir: config.data_dir.clone(),
        })
    }

    /// What drives the server's pipeline to rest, for tests (take it before `run`).
    pub fn idle(&self) -> Idle {
        match &self.workers {
            Workers::Local(workers) => Idle::Local(workers.clone()),
            Workers::Aws(aws) => Idle::Aws {
                supervisor: Box::new(aws.supervisor.clone()),
                activity: aws.activity.clone(),
            },
        }
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.listener.local_addr()?)
    }

    /// Serves until `shutdown` completes.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let (workers, pipeline) = match self.workers {
            Workers::Local(workers) => (Vec::new(), Some(workers.start()?)),
            Workers::Aws(aws) => {
                let AwsWorkers {
                    shape,
                    supervisor,
                    activity,
                } = *aws;
                let handlers = Arc::new(Handlers::new(
                    shape.services.clone(),
                    self.delivery,
                    Deliveries::Supervised(Box::new(supervisor)),
                ));
                let emulated = wharf_aws::emulate::spawn(
                    &shape.clients,
                    &shape.queues,
                    handlers,
                    &self.data_dir,
                    true,
                    activity,
                );
                (emulated.tasks, None)
            }
        };
        let open_files = crate::serve::raise_open_file_limit();
        let capacity = crate::serve::connection_capacity(&self.connections, open_files);
        tracing::info!(open_files, connections = capacity, "serving");
        let served = crate::serve::serve(
            self.listener,
            self.router,
            self.connections,
            capacity,
            shutdown,
        )
        .await;
        for worker in workers {
            worker.abort();
        }
        if let Some(pipeline) = pipeline {
            pipeline.stop();
        }
        Ok(served?)
    }
}

/// Drives a running server's pipeline until it has no work left: what tests wait on instead
/// of sleeping.
#[derive(Clone)]
pub enum Idle {
    /// The local workers, driven step by step.
    Local(Arc<LocalWorkers>),
    /// The aws shape's stand-ins, watched until every one comes round finding nothing, and
    /// the delivery tasks they started.
    Aws {
        /// The delivery tasks' supervisor.
        supervisor: Box<Supervisor>,
        /// The stand-ins' activity.
        activity: Arc<Activity>,
    },
}

impl Idle {
    /// Completes once the pipeline is at rest.
    pub async fn wait(&self) -> anyhow::Result<()> {
        match self {
            Idle::Local(workers) => Ok(workers.run_until_idle().await?),
            Idle::Aws {
                supervisor,
                activity,
            } => {
                activity.until_quiet().await;
                supervisor.until_idle().await;
                activity.until_quiet().await;
                Ok(())
            }
        }
    }
}

/// A clock that reads `start` when created and advances in real time from there: closing a
/// billing period in a demo or an end-to-end test without waiting for the month to end.
struct StartedClock {
    start: time::OffsetDateTime,
    since: std::time::Instant,
}

impl StartedClock {
    fn new(start: time::OffsetDateTime) -> StartedClock {
        StartedClock {
            start,
            since: std::time::Instant::now(),
        }
    }
}

impl Clock for StartedClock {
    fn now(&self) -> time::OffsetDateTime {
        self.start + self.since.elapsed()
    }
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}
