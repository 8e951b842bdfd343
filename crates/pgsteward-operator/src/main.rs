//! `pgsteward-operator`: run the controller, install the CRDs, or print what
//! the operator needs (its RBAC rules, its CRDs).

use std::{
    net::SocketAddr,
    process::ExitCode,
    sync::{Arc, atomic::AtomicBool},
};

use clap::{Parser, Subcommand, ValueEnum};
use kube::{Api, Client, api::ListParams};
use pgsteward_api::PgInstance;
use pgsteward_operator::{
    backups,
    build::Settings,
    context::Context,
    controller, crds,
    error::chain,
    leader,
    metrics::Metrics,
    rbac,
    server::{self, ServerState},
};
use tracing::{error, info};

#[derive(Parser, Debug)]
#[command(
    name = "pgsteward-operator",
    version,
    about = "Runs PostgreSQL on Kubernetes from PgInstance objects",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the controller (the default).
    Run(RunArgs),
    /// Apply the CRDs to the current cluster and wait until they are established.
    InstallCrds,
    /// Print the RBAC rules the operator needs, as JSON.
    Rbac,
    /// Print the CRDs as YAML.
    Crds,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Json,
    Text,
}

#[derive(clap::Args, Debug, Clone)]
struct RunArgs {
    /// Apply the CRDs before starting (what `make run` does).
    #[arg(long, env = "PGSTEWARD_INSTALL_CRDS")]
    install_crds: bool,
    /// Namespaces to watch, comma-separated; empty: all namespaces.
    #[arg(
        long,
        env = "PGSTEWARD_WATCH_NAMESPACES",
        value_delimiter = ',',
        default_value = ""
    )]
    watch_namespaces: Vec<String>,
    /// Elect a leader through a Lease, so several replicas are safe.
    #[arg(long, env = "PGSTEWARD_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    leader_election: bool,
    /// The Lease's name.
    #[arg(long, env = "PGSTEWARD_LEASE_NAME", default_value = "pgsteward-leader")]
    lease_name: String,
    /// The Lease's namespace: the operator's own.
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    /// This replica's identity in the Lease (default: the host name and a random suffix).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, env = "PGSTEWARD_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    metrics_addr: SocketAddr,
    /// Repository of the default PostgreSQL image.
    #[arg(
        long,
        env = "PGSTEWARD_POSTGRES_IMAGE_REPOSITORY",
        default_value = "ghcr.io/pgsteward/postgres"
    )]
    postgres_image_repository: String,
    /// Tag suffix of the default image: `<major>-<variant>`.
    #[arg(
        long,
        env = "PGSTEWARD_POSTGRES_IMAGE_VARIANT",
        default_value = "standard-trixie"
    )]
    postgres_image_variant: String,
    /// Log format.
    #[arg(long, env = "PGSTEWARD_LOG_FORMAT", value_enum, default_value = "json")]
    log_format: LogFormat,
}

fn init_logging(format: LogFormat) {
    use tracing_subscriber::{EnvFilter, fmt};
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    match format {
        LogFormat::Json => fmt()
            .json()
            .with_env_filter(filter)
            .with_current_span(true)
            .with_span_list(false)
            .flatten_event(true)
            .init(),
        LogFormat::Text => fmt().with_env_filter(filter).init(),
    }
}

const NO_CLUSTER_HINT: &str = "create one with `kind create cluster` (https://kind.sigs.k8s.io) or point KUBECONFIG at one, then run `make run` again";

/// A client for a cluster that answers, or the one line that says why not.
async fn connect() -> Result<Client, String> {
    let config = kube::Config::infer().await.map_err(|_| {
        let from = std::env::var("KUBECONFIG").unwrap_or_else(|_| "~/.kube/config".into());
        format!(
            "pgsteward-operator: no Kubernetes cluster configured (no usable kubeconfig at {from}, and not inside a pod); {NO_CLUSTER_HINT}"
        )
    })?;
    let url = config.cluster_url.to_string();
    let unreachable = |why: String| {
        format!(
            "pgsteward-operator: no reachable Kubernetes cluster at {url} ({why}); {NO_CLUSTER_HINT}"
        )
    };
    let client = Client::try_from(config).map_err(|e| unreachable(chain(&e)))?;
    match tokio::time::timeout(
        std::time::Duration::from_secs(10),
        client.apiserver_version(),
    )
    .await
    {
        Ok(Ok(_)) => Ok(client),
        Ok(Err(e)) => Err(unreachable(root_cause(&e))),
        Err(_) => Err(unreachable("no answer within 10 s".into())),
    }
}

/// The innermost cause: "Connection refused (os error 111)".
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Rbac) => {
            println!("{}", rbac::to_json());
            ExitCode::SUCCESS
        }
        Some(Command::Crds) => {
            for (_, crd) in pgsteward_api::crds() {
                print!("{}", pgsteward_api::crd_yaml(&crd));
            }
            ExitCode::SUCCESS
        }
        Some(Command::InstallCrds) => {
            let client = match connect().await {
                Ok(c) => c,
                Err(line) => {
                    eprintln!("{line}");
                    return ExitCode::from(2);
                }
            };
            init_logging(LogFormat::Text);
            match crds::install(&client).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("pgsteward-operator: {}", chain(&e));
                    ExitCode::FAILURE
                }
            }
        }
        Some(Command::Run(args)) => run(args).await,
        None => run(cli.run).await,
    }
}

async fn run(args: RunArgs) -> ExitCode {
    // Connect before logging starts, so a missing cluster is one line.
    let client = match connect().await {
        Ok(c) => c,
        Err(line) => {
            eprintln!("{line}");
            return ExitCode::from(2);
        }
    };
    init_logging(args.log_format);
    if args.install_crds
        && let Err(e) = crds::install(&client).await
    {
        eprintln!("pgsteward-operator: {}", chain(&e));
        return ExitCode::FAILURE;
    }
    if let Err(line) = can_list_instances(&client, &args.watch_namespaces).await {
        eprintln!("{line}");
        return ExitCode::FAILURE;
    }
    let metrics = Arc::new(Metrics::default());
    serve_metrics(args.metrics_addr, metrics.clone());

    let identity = args.identity.clone().unwrap_or_else(|| {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "pgsteward".into());
        format!("{host}-{:08x}", rand::random::<u32>())
    });
    let settings = Settings {
        image_repository: args.postgres_image_repository.clone(),
        image_variant: args.postgres_image_variant.clone(),
    };
    let ctx = Arc::new(Context::new(
        client.clone(),
        settings,
        metrics,
        Some(identity.clone()),
    ));
    let namespaces = watched_namespaces(&args.watch_namespaces);
    let work = move || async move {
        futures::future::join_all(
            namespaces
                .into_iter()
                .map(|ns| run_controllers(ctx.clone(), ns)),
        )
        .await;
    };
    if args.leader_election {
        let elected = leader::run_as_leader(
            client,
            &args.lease_namespace,
            &args.lease_name,
            &identity,
            work,
        );
        tokio::select! {
            result = elected => match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    error!(error = %chain(&e), "leader election");
                    ExitCode::FAILURE
                }
            },
            // A standby replica stops at once on SIGTERM/SIGINT.
            _ = shutdown_signal() => ExitCode::SUCCESS,
        }
    } else {
        work().await;
        ExitCode::SUCCESS
    }
}

/// The PgInstance and PgBackup controllers of one namespace (or all), until
/// shutdown.
async fn run_controllers(ctx: Arc<Context>, namespace: Option<String>) {
    let shutdown = futures::FutureExt::shared(Box::pin(shutdown_signal()));
    futures::future::join(
        controller::run(ctx.clone(), namespace.clone(), shutdown.clone()),
        backups::run(ctx, namespace, shutdown),
    )
    .await;
}

/// Check in the scope the operator will watch (in namespaced mode the
/// chart grants Roles only, so a cluster-wide list would be forbidden) that
/// PgInstances can be listed. The error is one line that says what to do.
async fn can_list_instances(client: &Client, watch_namespaces: &[String]) -> Result<(), String> {
    let probe: Api<PgInstance> = match watch_namespaces.first() {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let Err(e) = probe.list(&ListParams::default().limit(1)).await else {
        return Ok(());
    };
    let hint = match &e {
        kube::Error::Api(status) if status.code == 403 => {
            "the operator's ServiceAccount may not list them; check its RBAC (the chart's ClusterRole, or Roles in each of --watch-namespaces)"
        }
        _ => "install the CRDs with `make run` or `kubectl apply --server-side -f crds/`",
    };
    Err(format!(
        "pgsteward-operator: cannot list PgInstances ({}); {hint}",
        chain(&e)
    ))
}

/// Serve /metrics, /healthz and /readyz on `addr`, in the background.
fn serve_metrics(addr: SocketAddr, metrics: Arc<Metrics>) {
    let server_state = ServerState {
        metrics,
        ready: Arc::new(AtomicBool::new(true)),
    };
    tokio::spawn(async move {
        if let Err(e) = server::serve(addr, server_state).await {
            error!(%addr, error = %e, "metrics server stopped");
        }
    });
    info!(%addr, "serving /metrics, /healthz and /readyz");
}

/// One controller per namespace named, or one for all namespaces.
fn watched_namespaces(names: &[String]) -> Vec<Option<String>> {
    let ns: Vec<String> = names.iter().filter(|n| !n.is_empty()).cloned().collect();
    if ns.is_empty() {
        vec![None]
    } else {
        ns.into_iter().map(Some).collect()
    }
}

/// Resolves on SIGTERM (what Kubernetes sends) or SIGINT (Ctrl-C).
async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term => {},
    }
    info!("shutting down");
}
