//! `plimsoll guard`: watch a Redis, alert, and serve Prometheus metrics.
//!
//! Flags become a checked [`GuardConfig`] here, once; the library names any
//! bad setting. Alerts are printed to stdout and sent to every `--webhook`
//! and `--slack-webhook`. History is kept under `--history-dir` (by default
//! `.plimsoll/guard/<host_port>/`), never in the watched Redis.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use futures::future::BoxFuture;
use plimsoll::guard::{AttributeConfig, ForecastConfig, GuardStats};
use plimsoll::{Alert, AlertSink, Guard, GuardConfig, WebhookSink};
use tokio_util::sync::CancellationToken;

use crate::util::{
    OrOff, RedisArgs, addr_or_off, duration_or_off, human_bytes, parse_bytes, parse_duration,
    state_dir,
};

/// Settings of `plimsoll guard`.
#[derive(Debug, Args)]
pub struct GuardArgs {
    #[command(flatten)]
    redis: RedisArgs,

    /// Time between readings of Redis.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    interval: Duration,

    /// Memory levels to alert at, in percent of the limit.
    #[arg(long, value_delimiter = ',', default_value = "20,50,90")]
    levels: Vec<f64>,

    /// Hysteresis of the levels, in percentage points: a level clears only
    /// below `level - this`, and only after `--clear-after`.
    #[arg(long, default_value_t = 2.0)]
    hysteresis: f64,

    /// How long memory must stay below a level (less the hysteresis) before
    /// the level clears.
    #[arg(long, default_value = "15m", value_parser = parse_duration)]
    clear_after: Duration,

    /// Leeway levels: alert when the forecast time to full falls under these.
    #[arg(long, value_delimiter = ',', default_value = "72h,48h", value_parser = parse_duration)]
    leeway: Vec<Duration>,

    /// How far back the growth fit looks.
    #[arg(long, default_value = "6h", value_parser = parse_duration)]
    fit_window: Duration,

    /// The shortest history the forecast needs.
    #[arg(long, default_value = "15m", value_parser = parse_duration)]
    fit_min_span: Duration,

    /// Limit to measure against when Redis has no maxmemory (e.g. 8GiB).
    /// Default: the memory of Redis' machine.
    #[arg(long, value_parser = parse_bytes)]
    limit: Option<u64>,

    /// Where history and alert state are kept. Default:
    /// .plimsoll/guard/<host_port>/ under the current folder.
    #[arg(long)]
    history_dir: Option<PathBuf>,

    /// Keep history in memory only.
    #[arg(long, conflicts_with = "history_dir")]
    no_history: bool,

    /// POST alerts as JSON to this URL (repeatable).
    #[arg(long)]
    webhook: Vec<String>,

    /// POST alerts to this Slack-compatible incoming webhook (repeatable).
    #[arg(long)]
    slack_webhook: Vec<String>,

    /// Serve Prometheus metrics (/metrics), /stats and /healthz here; `off`
    /// to not serve them.
    #[arg(long, default_value = "127.0.0.1:9464", value_parser = addr_or_off)]
    metrics_listen: OrOff<SocketAddr>,

    /// Time between memory reports per key family; `off` for none.
    #[arg(long, default_value = "15m", value_parser = duration_or_off)]
    attribute_every: OrOff<Duration>,

    /// Commands per second per node a memory report may send.
    #[arg(long, default_value_t = plimsoll::guard::attribute::scan::DEFAULT_COMMAND_BUDGET)]
    budget: u32,

    /// Keys per second per node a memory report may walk.
    #[arg(long, default_value_t = plimsoll::guard::attribute::scan::DEFAULT_KEYS_PER_SECOND)]
    keys_per_sec: u32,

    /// Take one reading (and one memory report unless
    /// --attribute-every off), print the status, and exit.
    #[arg(long)]
    once: bool,

    /// With --once: print the status as JSON.
    #[arg(long, requires = "once")]
    json: bool,

    /// Forget a node that is gone for good (host:port; repeatable). The
    /// guard keeps every primary and replica it has seen and shows a lost
    /// one as down (plimsoll_guard_up 0) until forgotten.
    #[arg(long, value_name = "HOST:PORT")]
    forget: Vec<String>,
}

/// Prints alerts to stdout, for people watching the command.
#[derive(Debug)]
struct PrintSink;

impl AlertSink for PrintSink {
    fn name(&self) -> &str {
        "stdout"
    }

    fn send<'a>(&'a self, alert: &'a Alert) -> BoxFuture<'a, plimsoll::Result<()>> {
        Box::pin(async move {
            let when = humantime::format_rfc3339_seconds(
                std::time::UNIX_EPOCH + Duration::from_millis(alert.at_ms),
            );
            println!("[{when}] {:?} {}", alert.severity, alert.text().trim_end());
            Ok(())
        })
    }
}

pub async fn run(args: GuardArgs) -> Result<()> {
    let redis = args.redis.connect().await?;
    let config = config(&args, &redis)?;
    let guard = Guard::new(redis, config).context("invalid guard settings")?;
    for node in &args.forget {
        if guard.forget(node) {
            eprintln!("plimsoll guard: forgot {node}");
        } else {
            eprintln!("plimsoll guard: {node} was not known (nothing to forget)");
        }
    }
    if args.once {
        return once(&guard, &args).await;
    }
    let shutdown = CancellationToken::new();
    let mut tasks = guard.start(shutdown.clone());
    if let OrOff(Some(addr)) = args.metrics_listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr} for metrics"))?;
        eprintln!("plimsoll guard: metrics on http://{addr}/metrics");
        let app = plimsoll_server::guard_metrics::app(guard.clone());
        let token = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move { token.cancelled().await })
                .await;
        }));
    }
    eprintln!(
        "plimsoll guard: watching {} every {}; Ctrl-C or SIGTERM stops",
        args.redis.redacted(),
        humantime::format_duration(args.interval)
    );
    crate::util::shutdown_signal().await;
    // Shutdown order: stop the services (a round in progress finishes),
    // then the metrics server.
    shutdown.cancel();
    for task in tasks {
        let _ = task.await;
    }
    Ok(())
}

fn config(args: &GuardArgs, redis: &plimsoll::Redis) -> Result<GuardConfig> {
    let mut sinks: Vec<Arc<dyn AlertSink>> = vec![Arc::new(PrintSink)];
    for url in &args.webhook {
        sinks.push(Arc::new(WebhookSink::json(url)?));
    }
    for url in &args.slack_webhook {
        sinks.push(Arc::new(WebhookSink::slack(url)?));
    }
    let OrOff(attribute_interval) = args.attribute_every;
    let history_dir = if args.no_history {
        None
    } else {
        Some(match &args.history_dir {
            Some(dir) => dir.clone(),
            None => state_dir("guard", redis),
        })
    };
    if args.levels.is_empty() {
        bail!("--levels needs at least one level");
    }
    Ok(GuardConfig {
        interval: args.interval,
        levels: args.levels.iter().map(|p| p / 100.0).collect(),
        hysteresis: args.hysteresis / 100.0,
        clear_after: args.clear_after,
        leeway: args.leeway.clone(),
        limit: args.limit,
        forecast: ForecastConfig {
            window: args.fit_window,
            min_span: args.fit_min_span,
            ..ForecastConfig::default()
        },
        history_dir,
        attribute_interval,
        attribute: AttributeConfig {
            budget: args.budget,
            keys_per_sec: args.keys_per_sec,
            plimsoll_prefixes: vec![args.redis.prefix.clone()],
            ..AttributeConfig::default()
        },
        sinks,
        ..GuardConfig::default()
    })
}

async fn once(guard: &Guard, args: &GuardArgs) -> Result<()> {
    guard.sample_once().await?;
    if args.attribute_every.0.is_some() {
        guard.attribute_once().await?;
    }
    let stats = guard.stats();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&stats)?);
    } else {
        print!("{}", status(&stats));
    }
    Ok(())
}

/// The status for people.
fn status(stats: &GuardStats) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    for node in &stats.nodes {
        if !node.up {
            let _ = writeln!(out, "{}: not reachable", node.node);
            continue;
        }
        let _ = writeln!(
            out,
            "{}: {} of {} ({:.1}%, limit from {}{}), {} keys",
            node.node,
            human_bytes(node.used_bytes),
            human_bytes(node.limit_bytes),
            node.used_ratio * 100.0,
            node.limit_source.as_str(),
            if node.maxmemory_bytes == 0 {
                "; NO MAXMEMORY SET: Redis can grow until the machine runs out"
            } else {
                ""
            },
            node.keys
        );
        match &node.forecast {
            Some(f) => {
                let ttf = f
                    .time_to_full()
                    .map(|d| {
                        humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
                    })
                    .unwrap_or_else(|| "not filling".into());
                let _ = writeln!(
                    out,
                    "  {}, full in {ttf}",
                    plimsoll::units::human_rate_per_hour(f.growth_bytes_per_sec)
                );
            }
            None => {
                let _ = writeln!(out, "  forecast: not enough history yet");
            }
        }
        if !node.levels_raised.is_empty() {
            let levels: Vec<String> = node
                .levels_raised
                .iter()
                .map(|l| format!("{:.0}%", l * 100.0))
                .collect();
            let _ = writeln!(out, "  levels raised: {}", levels.join(", "));
        }
    }
    if let Some(report) = &stats.report {
        let _ = writeln!(out, "largest key families:");
        for f in report.families.iter().take(10) {
            let _ = writeln!(
                out,
                "  {:>10}  {:>9} keys  {}",
                human_bytes(f.bytes),
                f.keys,
                f.name
            );
        }
    }
    out
}
