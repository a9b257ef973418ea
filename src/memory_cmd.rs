//! `plimsoll memory`: one memory report per key family.
//!
//! The report is remembered under `--state-dir` (by default
//! `.plimsoll/memory/<host_port>/`), so the next run shows what grew and
//! names suspected leaks. Nothing is written into Redis.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::Args;
use plimsoll::SystemClock;
use plimsoll::guard::attribute::report::DEFAULT_REPORT_HISTORY;
use plimsoll::guard::attribute::scan::{
    DEFAULT_COMMAND_BUDGET, DEFAULT_KEYS_PER_SECOND, DEFAULT_MAX_SCAN_KEYS,
    DEFAULT_SAMPLES_PER_FAMILY, DEFAULT_SCAN_COUNT,
};
use plimsoll::guard::{AttributeConfig, MemoryReport, ReportHistory};

use crate::util::{RedisArgs, human_bytes, parse_duration, state_dir};

/// Settings of `plimsoll memory`.
#[derive(Debug, Args)]
pub struct MemoryArgs {
    #[command(flatten)]
    redis: RedisArgs,

    /// Print the report as JSON.
    #[arg(long)]
    json: bool,

    /// Commands per second per node the walk may send.
    #[arg(long, default_value_t = DEFAULT_COMMAND_BUDGET)]
    budget: u32,

    /// Keys per second per node the walk may visit.
    #[arg(long, default_value_t = DEFAULT_KEYS_PER_SECOND)]
    keys_per_sec: u32,

    /// SCAN COUNT per call.
    #[arg(long, default_value_t = DEFAULT_SCAN_COUNT)]
    scan_count: u32,

    /// Keys measured per family at least.
    #[arg(long, default_value_t = DEFAULT_SAMPLES_PER_FAMILY)]
    samples: usize,

    /// Keys walked per node before the rest is estimated from the sample.
    #[arg(long, default_value_t = DEFAULT_MAX_SCAN_KEYS)]
    max_keys: u64,

    /// Longest walk per node before the rest is estimated.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    max_duration: Duration,

    /// BullMQ prefix in use (repeatable; default `bull`).
    #[arg(long = "bullmq-prefix", default_value = "bull")]
    bullmq_prefixes: Vec<String>,

    /// Families listed.
    #[arg(long, default_value_t = 25)]
    top: usize,

    /// Where previous reports are kept. Default:
    /// .plimsoll/memory/<host_port>/ under the current folder.
    #[arg(long)]
    state_dir: Option<PathBuf>,

    /// Keep no report history (no growth, no leak detection).
    #[arg(long, conflicts_with = "state_dir")]
    no_state: bool,
}

pub async fn run(args: MemoryArgs) -> Result<()> {
    let redis = args.redis.connect().await?;
    let config = AttributeConfig {
        budget: args.budget,
        keys_per_sec: args.keys_per_sec,
        scan_count: args.scan_count,
        samples_per_family: args.samples,
        max_samples_per_family: args
            .samples
            .max(plimsoll::guard::attribute::scan::DEFAULT_MAX_SAMPLES_PER_FAMILY),
        max_keys: args.max_keys,
        max_duration: args.max_duration,
        bullmq_prefixes: args.bullmq_prefixes.clone(),
        plimsoll_prefixes: vec![args.redis.prefix.clone()],
        ..AttributeConfig::default()
    };
    let mut history = if args.no_state {
        None
    } else {
        let dir = args
            .state_dir
            .clone()
            .unwrap_or_else(|| state_dir("memory", &redis));
        Some(ReportHistory::open(
            dir.join("reports.jsonl"),
            DEFAULT_REPORT_HISTORY,
        )?)
    };
    let report =
        plimsoll::guard::attribute(&redis, &config, &SystemClock, history.as_mut()).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", human(&report, args.top));
    }
    Ok(())
}

/// The report for people: what was walked, suspected leaks, growth, then
/// the largest families.
pub fn human(report: &MemoryReport, top: usize) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} keys on {} node(s), used_memory {}; walked {} keys ({}) in {:.1} s with {} commands \
         (budget {}/s per node, {} back-off(s))",
        report.keys_total,
        report.nodes.len(),
        human_bytes(report.used_memory),
        report.keys_scanned,
        if report.complete {
            "all of them"
        } else {
            "a sample; counts are scaled"
        },
        report.duration_secs,
        report.commands,
        report.budget_per_node,
        report.nodes.iter().map(|n| n.backoffs).sum::<u64>()
    );
    let leaks = report.suspected_leaks();
    if !leaks.is_empty() {
        let _ = writeln!(
            out,
            "\nSuspected leaks (grow in every recent report, no TTL):"
        );
        for f in &leaks {
            let _ = writeln!(
                out,
                "  {}  +{} since the last report, now {} in {} keys",
                f.name,
                human_bytes(f.growth_bytes.unwrap_or(0).max(0) as u64),
                human_bytes(f.bytes),
                f.keys
            );
        }
    }
    let growing = report.growing();
    if !growing.is_empty() {
        let interval = growing[0].growth_interval_secs.unwrap_or(0.0);
        let _ = writeln!(
            out,
            "\nGrowing since the last report ({}):",
            humantime::format_duration(Duration::from_secs(interval as u64))
        );
        for f in growing.iter().take(top.min(10)) {
            let _ = writeln!(
                out,
                "  {:>+12}  {:>+9} keys  {}",
                signed(f.growth_bytes.unwrap_or(0)),
                f.growth_keys.unwrap_or(0),
                f.name
            );
        }
    }
    let _ = writeln!(
        out,
        "\n{:>10} {:>10} {:>10} {:>7}  family",
        "bytes", "± (95%)", "keys", "no TTL"
    );
    for f in report.families.iter().take(top) {
        let _ = writeln!(
            out,
            "{:>10} {:>10} {:>10} {:>6.0}%  {}{}",
            human_bytes(f.bytes),
            human_bytes(f.bytes_error),
            f.keys,
            f.no_ttl_share * 100.0,
            f.name,
            if f.name != f.pattern {
                format!("  [{}]", f.pattern)
            } else {
                String::new()
            }
        );
    }
    if report.families.len() > top {
        let rest: u64 = report.families[top..].iter().map(|f| f.bytes).sum();
        let _ = writeln!(
            out,
            "{:>10} {:>10} {:>10} {:>7}  in {} smaller families (--top to list them)",
            human_bytes(rest),
            "",
            report.families[top..].iter().map(|f| f.keys).sum::<u64>(),
            "",
            report.families.len() - top
        );
    }
    let estimated: u64 = report.families.iter().map(|f| f.sampled_estimated).sum();
    if estimated > 0 {
        let _ = writeln!(
            out,
            "({estimated} measured key(s) were too big to count exactly; Redis estimated them \
             from their first elements, and their families' ± allows 10% for it)"
        );
    }
    out.push_str(&accounting(report));
    out
}

/// How `used_memory` adds up: keys, Redis outside its keys, the rest.
fn accounting(report: &MemoryReport) -> String {
    let mut out = String::new();
    let a = &report.accounting;
    let used = report.used_memory;
    let share = |bytes: u64| {
        if used > 0 {
            format!("{:>3.0}%", bytes as f64 * 100.0 / used as f64)
        } else {
            String::new()
        }
    };
    let _ = writeln!(
        out,
        "
used_memory {} =",
        human_bytes(used)
    );
    let _ = writeln!(
        out,
        "{:>10} {:>10} {}  keys (all families above)",
        human_bytes(a.keys_bytes),
        human_bytes(a.keys_bytes_error),
        share(a.keys_bytes)
    );
    let Some(outside) = &a.outside_keys else {
        let _ = writeln!(
            out,
            "  (Redis refused MEMORY STATS: memory outside the keys is not accounted for)"
        );
        return out;
    };
    for (bytes, what) in [
        (outside.startup, "Redis itself at start"),
        (outside.key_tables, "key tables (buckets, expires)"),
        (outside.clients, "client buffers"),
        (outside.replication_backlog, "replication backlog"),
        (outside.aof_buffer, "AOF buffer"),
        (outside.scripts, "scripts"),
    ] {
        if bytes > 0 {
            let _ = writeln!(
                out,
                "{:>10} {:>10} {}  {what}",
                human_bytes(bytes),
                "",
                share(bytes)
            );
        }
    }
    if let Some(rest) = a.unexplained_bytes {
        let _ = writeln!(
            out,
            "{:>10} {:>10} {}  not explained{}",
            signed(rest),
            "",
            share(rest.unsigned_abs()),
            if a.too_much_unexplained(used) {
                " -- more than the keys' error and 5% of used_memory: families were missed, \
                 mismeasured, or memory changed during the walk"
            } else {
                " (within the keys' error or 5% of used_memory)"
            }
        );
    }
    if outside.rss_beyond_used > 0 {
        let _ = writeln!(
            out,
            "and beyond used_memory: {} of RSS (fragmentation, pages not yet returned)",
            human_bytes(outside.rss_beyond_used as u64)
        );
    }
    out
}

fn signed(n: i64) -> String {
    let sign = if n < 0 { "-" } else { "+" };
    format!("{sign}{}", human_bytes(n.unsigned_abs()))
}
