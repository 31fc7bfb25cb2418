//! `wharf`: the server, the admin tool and the OpenAPI printer, in one binary.

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Instant;
use wharf::config::{Backend, Config, LogFormat};
use wharf_core::domain::Role;

#[derive(Parser)]
#[command(
    name = "wharf",
    version,
    about = "Multi-tenant backend for selling data feeds"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the API and the pipeline in one process: the local shape (SQLite in the data dir),
    /// or the aws shape against AWS or an emulator.
    Serve(ServeArgs),
    /// Administration.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// The aws shape.
    Aws {
        #[command(subcommand)]
        command: AwsCommand,
    },
    /// Print the OpenAPI document.
    Openapi,
}

#[derive(clap::Args)]
struct ServeArgs {
    /// `local` (SQLite, the default) or `aws` (DynamoDB, SQS, Cognito, S3; this process
    /// stands in for Lambda's event sources).
    #[arg(long, value_enum)]
    backend: Option<BackendArg>,
    /// An endpoint for every AWS service instead of AWS's own (an emulator such as moto).
    #[arg(long)]
    aws_endpoint_url: Option<String>,
    /// Data directory (default ./wharf-data).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Listen address (default 127.0.0.1:8080).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Allow webhooks to loopback and private addresses (testing only).
    #[arg(long)]
    allow_private_webhooks: bool,
    /// Seed a demo vendor, feeds and subscriber, and generate market ticks.
    #[arg(long)]
    demo: bool,
}

#[derive(Subcommand)]
enum AwsCommand {
    /// Create the DynamoDB table, SQS queues, Cognito user pool and S3 bucket the aws shape
    /// needs, in an emulator or a development account (credentials and region come from the
    /// AWS environment). Running it again changes nothing.
    Bootstrap(BootstrapArgs),
}

#[derive(clap::Args)]
struct BootstrapArgs {
    /// An endpoint for every AWS service instead of AWS's own (an emulator such as moto).
    #[arg(long)]
    aws_endpoint_url: Option<String>,
    /// The table's name.
    #[arg(long, default_value = "wharf")]
    table: String,
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Create a platform user.
    Create(AdminCreateArgs),
}

#[derive(clap::Args)]
struct AdminCreateArgs {
    /// Login email.
    #[arg(long)]
    email: String,
    /// Password (12+ characters).
    #[arg(long, env = "WHARF_ADMIN_PASSWORD", hide_env_values = true)]
    password: String,
    /// Role of the new user.
    #[arg(long, value_enum, default_value = "platform_admin")]
    role: PlatformRole,
    /// Data directory (default ./wharf-data).
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

#[derive(Clone, Copy, ValueEnum)]
enum BackendArg {
    Local,
    Aws,
}

#[derive(Clone, Copy, ValueEnum)]
enum PlatformRole {
    #[value(name = "platform_admin")]
    PlatformAdmin,
    #[value(name = "platform_finance")]
    PlatformFinance,
}

fn init_logs(format: LogFormat) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("WHARF_LOG").unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// mimalloc instead of glibc's malloc: glibc kept freed large blocks (a password hash's
/// 19 MiB work area) resident in per-thread heaps, taking the server past 450 MiB in a few
/// dozen sign-ups, and its allocator was a fifth of the server's CPU time under ingest.
#[cfg(target_os = "linux")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Option numbers of mimalloc's `mi_option_e` (v3, as bundled by libmimalloc-sys 0.1.49);
/// a test checks them against their documented defaults so an upgrade that moves them fails.
#[cfg(target_os = "linux")]
mod mimalloc_option {
    pub const PURGE_DELAY: i32 = 15;
    pub const ALLOW_THP: i32 = 43;
}

/// Returns freed memory to the OS at once and keeps transparent huge pages out of the
/// process: with mimalloc's defaults (purge after a second, 2 MiB huge pages) the server's peak
/// resident memory under a delivery load was 297 MiB; with these, 105 MiB, and faster.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn tune_allocator() {
    // SAFETY: both calls only set process-wide parameters and take plain integers; this runs
    // first thing in `main`, before any other thread exists.
    unsafe {
        libmimalloc_sys::mi_option_set(mimalloc_option::PURGE_DELAY, 0);
        libmimalloc_sys::mi_option_set(mimalloc_option::ALLOW_THP, 0);
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

#[cfg(not(target_os = "linux"))]
fn tune_allocator() {}

fn main() -> anyhow::Result<()> {
    tune_allocator();
    if wharf::aws::lambda::is_lambda() {
        return lambda_main();
    }
    let started = Instant::now();
    let cli = Cli::parse();
    if let Command::Openapi = cli.command {
        println!("{}", wharf_api::openapi().to_pretty_json()?);
        return Ok(());
    }
    let config = load_config();
    init_logs(config.log_format);
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve(config, args, started).await,
            Command::Admin {
                command: AdminCommand::Create(args),
            } => admin_create(config, args).await,
            Command::Aws {
                command: AwsCommand::Bootstrap(args),
            } => aws_bootstrap(args).await,
            Command::Openapi => Ok(()),
        }
    })
}

/// The configuration, or the process ends with the message naming what is wrong.
fn load_config() -> Config {
    match Config::load() {
        Ok(c) => c,
        Err(message) => {
            eprintln!("wharf: {message}");
            std::process::exit(2);
        }
    }
}

/// `wharf serve`: the API and the pipeline until a shutdown signal.
async fn serve(mut config: Config, args: ServeArgs, started: Instant) -> anyhow::Result<()> {
    config.data_dir = args.data_dir.unwrap_or(config.data_dir);
    config.listen = args.listen.unwrap_or(config.listen);
    config.allow_private_webhooks |= args.allow_private_webhooks;
    match args.backend {
        Some(BackendArg::Local) => config.backend = Backend::Local,
        Some(BackendArg::Aws) => config.backend = Backend::Aws,
        None => {}
    }
    if args.aws_endpoint_url.is_some() {
        config.aws.endpoint_url = args.aws_endpoint_url;
    }
    let server = wharf::Server::bind(&config).await?;
    let addr = server.local_addr()?;
    match config.backend {
        Backend::Local => println!(
            "Wharf is ready in {} ms (data in {})",
            started.elapsed().as_millis(),
            config.data_dir.display()
        ),
        Backend::Aws => println!(
            "Wharf (aws shape, table {} at {}) is ready in {} ms",
            config.aws.table,
            config.aws.endpoint_url.as_deref().unwrap_or("AWS"),
            started.elapsed().as_millis()
        ),
    }
    println!("  API      http://{addr}/v1");
    println!("  Docs     http://{addr}/docs");
    println!("  OpenAPI  http://{addr}/openapi.json");
    if args.demo {
        let seeded = wharf::demo::seed(&server.services, &config.data_dir).await?;
        print_demo(&seeded, addr);
        let services = server.services.clone();
        tokio::spawn(async move {
            if let Err(e) = wharf::demo::generate_ticks(services, &seeded).await {
                tracing::error!(error = %e, "the demo tick generator stopped");
            }
        });
    }
    server.run(wharf::app::shutdown_signal()).await
}

/// `wharf admin create`: a platform user in the local shape's data dir.
async fn admin_create(mut config: Config, args: AdminCreateArgs) -> anyhow::Result<()> {
    config.data_dir = args.data_dir.unwrap_or(config.data_dir);
    let services = wharf::app::local_services(&config)?;
    let role = match args.role {
        PlatformRole::PlatformAdmin => Role::PlatformAdmin,
        PlatformRole::PlatformFinance => Role::PlatformFinance,
    };
    let user = services
        .create_platform_user(&args.email, &args.password, role)
        .await
        .map_err(|e| anyhow::anyhow!("{}", describe(&e)))
        .context("cannot create the user")?;
    println!(
        "created {} ({}) with role {}",
        user.email,
        user.id,
        role.as_str()
    );
    Ok(())
}

/// `wharf aws bootstrap`: the aws shape's resources, created where missing.
async fn aws_bootstrap(args: BootstrapArgs) -> anyhow::Result<()> {
    let clients = wharf_aws::Clients::connect(wharf_aws::AwsSettings {
        endpoint_url: args.aws_endpoint_url,
        table: args.table,
        ..wharf_aws::AwsSettings::default()
    })
    .await;
    let done = wharf_aws::bootstrap::bootstrap(&clients)
        .await
        .map_err(|e| anyhow::anyhow!("{}", describe(&e)))
        .context("cannot bootstrap the aws shape")?;
    let table_state = if done.table_created {
        "created"
    } else {
        "already there"
    };
    println!("table         {} ({table_state})", done.table);
    println!("stream        {}", done.stream_arn);
    println!("ingest queue  {}", done.ingest_queue_url);
    println!("dead letters  {}", done.ingest_dlq_url);
    let pool = wharf_aws::cognito::bootstrap_user_pool(&clients, "wharf")
        .await
        .map_err(|e| anyhow::anyhow!("{}", describe(&e)))
        .context("cannot bootstrap the user pool")?;
    println!("user pool     {}", pool.pool_id);
    println!("app client    {}", pool.client_id);
    wharf_aws::s3::bootstrap_bucket(&clients)
        .await
        .map_err(|e| anyhow::anyhow!("{}", describe(&e)))
        .context("cannot bootstrap the object bucket")?;
    println!("bucket        {}", clients.settings.bucket);
    Ok(())
}

/// Lambda: JSON logs, one runtime, the handler `_HANDLER` names.
fn lambda_main() -> anyhow::Result<()> {
    let mut config = load_config();
    config.backend = Backend::Aws;
    // Only /tmp is writable on Lambda.
    if config.data_dir.is_relative() {
        config.data_dir = std::env::temp_dir().join("wharf-data");
    }
    init_logs(LogFormat::Json);
    tokio::runtime::Runtime::new()?.block_on(wharf::aws::lambda::run(config))
}

fn print_demo(d: &wharf::demo::Demo, addr: std::net::SocketAddr) {
    println!();
    println!("Demo data (kept in the data dir; ticks are generated every 200 ms):");
    println!("  vendor      {} / {}", d.vendor_email, d.vendor_password);
    println!(
        "  subscriber  {} / {}",
        d.subscriber_email, d.subscriber_password
    );
    println!("  live feed   {}   (filter + map)", d.live_feed_id);
    println!(
        "  bars feed   {}   (1-minute window; first bar after the first full minute)",
        d.bars_feed_id
    );
    if let Some(scored) = &d.scored_feed_id {
        println!(
            "  scored feed {scored}   (each bar's range in basis points, by an ONNX model after the window)"
        );
    }
    println!();
    println!("Watch the data arrive:");
    println!(
        "  TOKEN=$(curl -s -X POST http://{addr}/v1/auth/token -H 'content-type: application/json' -d '{{\"email\":\"{}\",\"password\":\"{}\"}}' | jq -r .access_token)",
        d.subscriber_email, d.subscriber_password
    );
    for id in &d.subscription_ids {
        println!(
            "  curl -s -H \"authorization: Bearer $TOKEN\" 'http://{addr}/v1/subscriptions/{id}/records?limit=5' | jq '.items[].record.data'"
        );
    }
}

fn describe(e: &wharf_core::CoreError) -> String {
    match e {
        wharf_core::CoreError::Validation(errors) => errors
            .iter()
            .map(|f| format!("{} {}", f.path, f.message))
            .collect::<Vec<_>>()
            .join("; "),
        other => other.to_string(),
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::mimalloc_option;

    #[test]
    fn mimalloc_option_numbers_name_the_options_meant() {
        // The test binary runs on mimalloc too, untuned: the documented defaults show that the
        // numbers still name purge_delay (1000 ms) and allow_thp (on).
        // SAFETY: reads two process-wide integers.
        #[allow(unsafe_code)]
        let (purge_delay, allow_thp) = unsafe {
            (
                libmimalloc_sys::mi_option_get(mimalloc_option::PURGE_DELAY),
                libmimalloc_sys::mi_option_get(mimalloc_option::ALLOW_THP),
            )
        };
        assert_eq!((purge_delay, allow_thp), (1000, 1));
    }
}
