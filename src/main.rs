//! `yatagarasu`: the high-availability S3 proxy.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};
use yatagarasu::config::{self, LoggingConfig, TracingConfig};
use yatagarasu::telemetry::Telemetry;

/// mimalloc instead of glibc malloc, with `--features mimalloc` (issue 13):
/// callgrind counts ~8% fewer instructions per cache hit and per
/// pass-through request with it, but interleaved wall-clock runs showed no
/// less CPU, and the process starts ~17 MiB larger (a 1 GiB stream peaks
/// ~25 MiB above glibc's) unless `MIMALLOC_ARENA_EAGER_COMMIT=0` is set in
/// its environment, so it is off by default (bench/README.md, "Eleventh
/// round").
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const DEFAULT_CONFIG: &str = "/etc/yatagarasu/config.yaml";

/// High-availability S3 proxy: GET/HEAD objects by URL, failover across replicas.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Config file (YAML). Default: /etc/yatagarasu/config.yaml
    // Empty is parsed (clap's path parser would refuse it as "a value is
    // required for '--config'", even when it came from the variable) and
    // refused by `config_path`, which names where it came from.
    #[arg(
        short,
        long,
        env = "YATAGARASU_CONFIG",
        global = true,
        value_parser = clap::builder::TypedValueParser::map(clap::builder::OsStringValueParser::new(), PathBuf::from)
    )]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the proxy (the default).
    Serve,
    /// Validate the config and exit: 0 when valid, 1 with every error otherwise.
    Check,
    /// Start two local S3 replicas with sample objects and the proxy in front of them.
    Demo {
        /// Proxy listen address.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Metrics listen address (`/metrics`).
        #[arg(long, default_value = "127.0.0.1:9090")]
        metrics_listen: SocketAddr,
    },
    /// Ask the running proxy whether it is healthy: exit 0 on 200, 1 otherwise (Docker HEALTHCHECK, compose).
    #[command(long_about = HEALTHCHECK_ABOUT)]
    Healthcheck {
        /// Ask `/ready` (every bucket has a usable replica, no drain under way) instead of `/health`.
        #[arg(long)]
        ready: bool,
        /// The whole URL to GET instead (e.g. http://127.0.0.1:9090/health); the config is not read.
        #[arg(long, conflicts_with = "ready")]
        url: Option<url::Url>,
        /// Seconds to wait for the answer, connecting included.
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=3600))]
        timeout_seconds: u64,
    },
    /// Run a local S3-compatible server (s3s-fs) over a directory, for drills and tests.
    ServeS3 {
        /// Listen address.
        #[arg(long, default_value = "127.0.0.1:9000")]
        listen: SocketAddr,
        /// Directory with one sub-directory per bucket.
        #[arg(long)]
        root: PathBuf,
        /// Access key id required from clients.
        #[arg(long, env = "S3_ACCESS_KEY")]
        access_key: String,
        /// Secret key required from clients.
        #[arg(long, env = "S3_SECRET_KEY", hide_env_values = true)]
        secret_key: String,
    },
}

const HEALTHCHECK_ABOUT: &str = "\
Ask the running proxy whether it is healthy: GET /health (or /ready with --ready), exit 0 on a 200
answer, 1 otherwise with one line on stderr saying why (connection refused, the status and the start
of the body, no answer in time). For the container image's HEALTHCHECK, compose healthchecks and exec
probes: the image has no curl or wget.

Where it asks comes from the config serve reads (--config, YATAGARASU_CONFIG, or
/etc/yatagarasu/config.yaml): the metrics listener (metrics.port) when metrics are enabled, else the
proxy's listener (server.address); on 127.0.0.1 or [::1] when that listener binds every address,
else on the address it binds. HTTPS when that listener has TLS: the certificate is NOT verified (nor
with --url), since this is a check of the local process, as the kubelet's HTTPS probes do. No
client certificate is presented: a listener with client_ca_file (mutual TLS) is refused, saying so.

The config is read as serve reads it, ${VAR} substitution included. A ${VAR} unset in the
healthcheck's environment is filled with a placeholder when it is not in server.address, server.tls
or metrics (a credential, a token): the healthcheck needs the listener, not the secrets. Docker's
HEALTHCHECK runs with the container's environment, so the config reads as it does for serve.
--url skips the config entirely.";

/// Logs go to stdout, batched per event-loop thread
/// ([`yatagarasu::access_log::output`]). With `tracing.otlp_endpoint`, spans
/// are exported too (issue 16): the returned [`Telemetry`] flushes them on
/// shutdown.
fn init_tracing(
    logging: &LoggingConfig,
    traces: &TracingConfig,
    runtime: &tokio::runtime::Runtime,
) -> Option<Telemetry> {
    let spec = std::env::var(EnvFilter::DEFAULT_ENV).unwrap_or_else(|_| logging.level.clone());
    let mut filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&logging.level))
        .unwrap_or_else(|_| EnvFilter::new("info"))
        // The trace spans are exported, not logged (nor shown around log lines).
        .add_directive(
            format!("{}=off", yatagarasu::telemetry::TARGET)
                .parse()
                .expect("a valid directive"),
        );
    // The AWS SDK's credential providers log two INFO lines per replica at
    // every credential refresh (every 5 minutes for profile keys); the
    // proxy logs what matters of a refresh itself. Unless asked for by name.
    if !spec.contains("aws_config") {
        filter = filter.add_directive("aws_config=warn".parse().expect("a valid directive"));
    }
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let writer = yatagarasu::access_log::output::LogOutput::stdout();
    let fmt = yatagarasu::access_log::format::layer(logging.format == "json", ansi, writer).with_filter(filter);
    let (otel, telemetry) = match yatagarasu::telemetry::layer(traces, runtime.handle().clone()) {
        Ok(Some((layer, telemetry))) => (Some(layer), Some(telemetry)),
        Ok(None) => (None, None),
        Err(e) => {
            eprintln!("warning: traces are not exported: {e}");
            (None, None)
        }
    };
    let registry = tracing_subscriber::registry().with(fmt);
    // Without the trace layer rather than with `None` (issue 13): an absent
    // `Option` layer is interested in every callsite, so each disabled event
    // (an access line with `yatagarasu::access=off`) was still built and
    // dispatched, ~340 instructions a request.
    match otel {
        Some(otel) => registry.with(otel).init(),
        None => registry.init(),
    }
    telemetry
}

/// The config file to read, or why not: an empty `YATAGARASU_CONFIG` is an
/// error rather than "unset", because it is most often a template or Secret
/// that rendered nothing, and falling back to the default path would serve
/// another config than the one meant. The error is printed; the exit code
/// is that of a usage error.
fn config_path(cli: &Cli, source: Option<ValueSource>) -> Result<PathBuf, ExitCode> {
    match &cli.config {
        Some(path) if path.as_os_str().is_empty() => {
            if source == Some(ValueSource::EnvVariable) {
                eprintln!(
                    "error: YATAGARASU_CONFIG is set but empty: set it to a config file, or unset it to read {DEFAULT_CONFIG}"
                );
            } else {
                eprintln!("error: --config is empty: name a config file");
            }
            Err(ExitCode::from(2))
        }
        Some(path) => Ok(path.clone()),
        None => Ok(PathBuf::from(DEFAULT_CONFIG)),
    }
}

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let source = matches.value_source("config");
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_park(yatagarasu::access_log::output::idle)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Some(Command::Demo { listen, metrics_listen }) => {
            let _telemetry = init_tracing(&LoggingConfig::default(), &TracingConfig::default(), &runtime);
            report(runtime.block_on(yatagarasu::demo::run(listen, metrics_listen)))
        }
        Some(Command::ServeS3 {
            listen,
            ref root,
            ref access_key,
            ref secret_key,
        }) => {
            let _telemetry = init_tracing(&LoggingConfig::default(), &TracingConfig::default(), &runtime);
            report(runtime.block_on(serve_s3(listen, root.clone(), access_key.clone(), secret_key.clone())))
        }
        Some(Command::Healthcheck {
            ready,
            ref url,
            timeout_seconds,
        }) => {
            use yatagarasu::healthcheck::{self, Endpoint};
            let url = match url {
                Some(url) => url.clone(),
                None => {
                    // Docker reserves exit code 2: every failure here is 1.
                    let Ok(path) = config_path(&cli, source) else {
                        return ExitCode::FAILURE;
                    };
                    let endpoint = if ready { Endpoint::Ready } else { Endpoint::Health };
                    match healthcheck::load_config(&path)
                        .and_then(|c| healthcheck::target(&c, endpoint).map_err(Into::into))
                    {
                        Ok(url) => url,
                        Err(e) => {
                            eprintln!("unhealthy: {e}");
                            return ExitCode::FAILURE;
                        }
                    }
                }
            };
            match runtime.block_on(healthcheck::probe(&url, Duration::from_secs(timeout_seconds))) {
                Ok(()) => {
                    println!("healthy: {url} answered 200");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("unhealthy: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Some(Command::Check) => {
            let path = match config_path(&cli, source) {
                Ok(path) => path,
                Err(code) => return code,
            };
            // The exit code says whether the config is valid, whether or not
            // the report is read (`check | head -1`, `check | grep -q valid`):
            // a closed stdout is no reason to panic and exit 101.
            use std::io::Write;
            let (mut out, mut err) = (std::io::stdout(), std::io::stderr());
            match config::load_file(&path) {
                Ok(c) => {
                    let _ = writeln!(out, "{}: valid ({} bucket(s))", path.display(), c.buckets.len());
                    // Which credentials each replica will use (never the secret).
                    for b in &c.buckets {
                        for r in b.s3.resolved_replicas() {
                            let _ = writeln!(
                                out,
                                "  {}/{}: credentials: {}",
                                b.name,
                                r.name,
                                yatagarasu::credentials::describe(&r)
                            );
                        }
                    }
                    for warning in runtime.block_on(jwks_warnings(&c)) {
                        let _ = writeln!(err, "warning: {warning}");
                    }
                    ExitCode::SUCCESS
                }
                Err(errors) => {
                    let _ = write!(err, "{errors}");
                    ExitCode::FAILURE
                }
            }
        }
        Some(Command::Serve) | None => {
            let path = match config_path(&cli, source) {
                Ok(path) => path,
                Err(code) => return code,
            };
            if cli.config.is_none() && !path.exists() {
                eprintln!("error: no config: pass --config FILE (or set YATAGARASU_CONFIG), or try `yatagarasu demo`");
                return ExitCode::from(2);
            }
            let config = match config::load_file(&path) {
                Ok(c) => c,
                Err(errors) => {
                    eprint!("{errors}");
                    return ExitCode::from(2);
                }
            };
            let telemetry = init_tracing(&config.logging, &config.tracing, &runtime);
            let served = runtime.block_on(serve(config, path));
            // The spans of the last requests, exported before exit (the
            // runtime's workers still run the export).
            if let Some(t) = telemetry {
                t.shutdown();
            }
            report(served)
        }
    }
}

/// Every `jwks_url` that cannot be fetched from here: serving would refuse
/// to start without its keys, but the URL may be reachable only from where
/// the proxy runs, so `check` warns instead of failing.
async fn jwks_warnings(config: &config::Config) -> Vec<String> {
    let mut urls: Vec<(String, String)> = Vec::new();
    if let Some(url) = config.jwt.as_ref().and_then(|j| j.jwks_url.clone()) {
        urls.push(("jwt.jwks_url".into(), url));
    }
    for (i, b) in config.buckets.iter().enumerate() {
        if let Some(url) = b
            .auth
            .as_ref()
            .and_then(|a| a.jwt.as_ref())
            .and_then(|j| j.jwks_url.clone())
        {
            urls.push((format!("buckets[{i}].auth.jwt.jwks_url"), url));
        }
    }
    let Ok(client) = reqwest::Client::builder().timeout(Duration::from_secs(5)).build() else {
        return Vec::new();
    };
    let mut warnings = Vec::new();
    for (key, url) in urls {
        let problem = match client.get(&url).send().await {
            Ok(res) if res.status().is_success() => match res
                .bytes()
                .await
                .map(|b| serde_json::from_slice::<serde_json::Value>(&b))
            {
                Ok(Ok(v)) if v.get("keys").is_some_and(serde_json::Value::is_array) => None,
                _ => Some("the answer is not a JWKS (no \"keys\" array)".to_owned()),
            },
            Ok(res) => Some(format!("it answers {}", res.status())),
            Err(e) => Some(format!("unreachable from here ({})", e.without_url())),
        };
        if let Some(p) = problem {
            warnings.push(format!("{key}: {p}; serving would not start without its keys"));
        }
    }
    warnings
}

fn report(result: Result<(), Box<dyn std::error::Error>>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: config::Config, path: PathBuf) -> Result<(), Box<dyn std::error::Error>> {
    let app = yatagarasu::app::build(&config, yatagarasu::metrics::Metrics::new()).await?;
    let addr = config.server.socket_addr();
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let metrics_listener = if config.metrics.enabled {
        let maddr = config.metrics_socket_addr().expect("validated at load");
        let l = tokio::net::TcpListener::bind(&maddr)
            .await
            .map_err(|e| format!("cannot listen on {maddr} (metrics.port): {e}"))?;
        Some(l)
    } else {
        None
    };
    let grace = Duration::from_secs(config.server.shutdown_grace_seconds);
    let live = yatagarasu::reload::Live::new(app, Some(path));
    yatagarasu::server::run(live, listener, metrics_listener, grace, std::future::pending()).await?;
    Ok(())
}

async fn serve_s3(
    listen: SocketAddr,
    root: PathBuf,
    access_key: String,
    secret_key: String,
) -> Result<(), Box<dyn std::error::Error>> {
    let server = yatagarasu_testkit::s3::LocalS3::start(&root, listen, &access_key, &secret_key).await?;
    tracing::info!("local S3 server on {} serving {}", server.endpoint(), root.display());
    println!("S3 listening on {}", server.endpoint());
    tokio::signal::ctrl_c().await?;
    Ok(())
}
