//! `plimsoll serve`: the main job.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use plimsoll_server::config::{Overrides, ServerConfig};

use crate::util::{OrOff, addr_or_off};

/// Settings of `plimsoll serve` given as flags; the file and `PLIMSOLL_…`
/// variables hold the rest (see README.md, "Configuration").
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The configuration file (TOML). Without one, defaults and
    /// `PLIMSOLL_…` variables apply.
    #[arg(long, short = 'c', env = "PLIMSOLL_CONFIG")]
    config: Option<PathBuf>,
    /// Address of the API and dashboard (default 127.0.0.1:8080).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Address of /metrics (default 127.0.0.1:9464; `off` turns it off).
    #[arg(long, value_parser = addr_or_off)]
    metrics_listen: Option<OrOff<SocketAddr>>,
    /// Redis URL. Without one: 127.0.0.1:6379 if it answers, else a private
    /// redis-server in the data folder.
    #[arg(long)]
    redis: Option<String>,
    /// Data folder: embedded Redis, webhook spool, generated token.
    #[arg(long)]
    data_dir: Option<String>,
}

pub async fn run(args: ServeArgs) -> Result<()> {
    let overrides = Overrides {
        listen: args.listen.map(|addr| addr.to_string()),
        metrics_listen: args.metrics_listen.map(|OrOff(addr)| match addr {
            Some(addr) => addr.to_string(),
            None => "off".to_string(),
        }),
        redis_url: args.redis,
        data_dir: args.data_dir,
        tokens: Vec::new(),
    };
    let config = ServerConfig::load(args.config.as_deref(), &overrides)?;
    plimsoll_server::run(config, crate::util::shutdown_signal(), |started| {
        println!("Plimsoll is serving.");
        if started.redis_embedded {
            println!(
                "  Redis      {} (a private redis-server this process started; data in its data folder)",
                started.redis
            );
        } else if started.redis_connected {
            println!("  Redis      {}", started.redis);
        } else {
            println!(
                "  Redis      {}  (not answering yet: webhooks are spooled; the API, push delivery and the guard join when it answers)",
                started.redis
            );
        }
        println!("  API        http://{}/v1  (OpenAPI: /v1/openapi.json)", started.api);
        println!("  Dashboard  http://{}/login?token={}", started.api, started.token);
        if let Some(metrics) = started.metrics {
            println!("  Metrics    http://{metrics}/metrics");
        }
        if let Some(token) = &started.generated_token {
            println!("  Token      {token}  (generated and saved in the data folder; send it as Authorization: Bearer)");
        }
        println!("Stop with Ctrl-C.");
    })
    .await?;
    Ok(())
}
