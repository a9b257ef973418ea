//! A snapshot of the guard for metrics and dashboards.
//!
//! The library only builds this value; rendering it for Prometheus is the
//! binary's job (STYLE rule 10: library crates expose stats snapshots, only
//! the server depends on an exporter).

use std::collections::BTreeMap;

use serde::Serialize;

use super::Core;
use super::alerts::Alert;
use super::config::Settings;
use super::forecast::Forecast;
use super::sampler::LimitSource;

/// Families carried in the snapshot, largest first.
pub const STATS_FAMILIES: usize = 50;

/// What a node is to the guard.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum NodeRole {
    /// A primary: read every round.
    Primary,
    /// A replica a primary lists (only whether it is online is known).
    Replica,
}

/// One node.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct NodeStats {
    /// `host:port`.
    pub node: String,
    /// Primary or replica.
    pub role: NodeRole,
    /// Primaries: whether the last round read this node. Replicas: whether
    /// their primary lists them online. A node seen before and missing
    /// now (lost in a failover, a dead replica) is down until forgotten
    /// (`Guard::forget`).
    pub up: bool,
    /// `used_memory`.
    pub used_bytes: u64,
    /// `maxmemory` (0: unbounded).
    pub maxmemory_bytes: u64,
    /// The limit measured against.
    pub limit_bytes: u64,
    /// Where the limit comes from.
    pub limit_source: LimitSource,
    /// `used / limit`.
    pub used_ratio: f64,
    /// Keys, all databases.
    pub keys: u64,
    /// `evicted_keys` since Redis started.
    pub evicted_keys_total: u64,
    /// `errorstat_OOM` since Redis started.
    pub oom_rejections_total: u64,
    /// Memory levels raised (shares of the limit).
    pub levels_raised: Vec<f64>,
    /// Leeway levels raised (hours).
    pub leeway_raised_hours: Vec<f64>,
    /// The node's forecast.
    pub forecast: Option<Forecast>,
}

/// One family of the latest report.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FamilyStats {
    /// The pattern.
    pub pattern: String,
    /// For people.
    pub name: String,
    /// Keys.
    pub keys: u64,
    /// Bytes.
    pub bytes: u64,
    /// ± bytes (95%).
    pub bytes_error: u64,
    /// Share of keys without TTL.
    pub no_ttl_share: f64,
    /// Bytes gained since the report before.
    pub growth_bytes: Option<i64>,
    /// Grows steadily and has no TTL.
    pub suspected_leak: bool,
}

/// The latest memory report, in brief.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ReportStats {
    /// When it started (ms since the epoch).
    pub at_ms: u64,
    /// Seconds it took.
    pub duration_secs: f64,
    /// Commands it sent.
    pub commands: u64,
    /// The budget, commands per second per node.
    pub budget_per_node: u32,
    /// Keys in Redis.
    pub keys_total: u64,
    /// Keys visited.
    pub keys_scanned: u64,
    /// Largest families.
    pub families: Vec<FamilyStats>,
}

/// Everything the guard knows now.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct GuardStats {
    /// Per node, in address order.
    pub nodes: Vec<NodeStats>,
    /// `used_memory` summed over nodes.
    pub total_used_bytes: u64,
    /// Limits summed over nodes.
    pub total_limit_bytes: u64,
    /// The forecast of the sum.
    pub total_forecast: Option<Forecast>,
    /// Rounds run.
    pub samples_total: u64,
    /// Node readings that failed.
    pub sample_errors_total: u64,
    /// When the last reading was taken (ms since the epoch).
    pub last_sample_ms: Option<u64>,
    /// Alerts sent, by kind.
    pub alerts_sent_total: BTreeMap<String, u64>,
    /// Alerts held back by deduplication or the rate limit.
    pub alerts_held_back_total: u64,
    /// Deliveries that failed.
    pub alert_failures_total: u64,
    /// The latest alerts, oldest first.
    pub recent_alerts: Vec<Alert>,
    /// The latest memory report.
    pub report: Option<ReportStats>,
    /// Memory reports that failed.
    pub report_errors_total: u64,
    /// Writes of the local history that failed (the guard goes on).
    pub history_errors_total: u64,
}

impl NodeStats {
    /// A node known only by name: a replica, or a primary not read.
    fn unread(node: &str, role: NodeRole, up: bool) -> Self {
        Self {
            node: node.to_string(),
            role,
            up,
            used_bytes: 0,
            maxmemory_bytes: 0,
            limit_bytes: 0,
            limit_source: LimitSource::Maxmemory,
            used_ratio: 0.0,
            keys: 0,
            evicted_keys_total: 0,
            oom_rejections_total: 0,
            levels_raised: vec![],
            leeway_raised_hours: vec![],
            forecast: None,
        }
    }
}

pub(super) fn snapshot(core: &Core, settings: &Settings) -> GuardStats {
    let mut nodes: Vec<NodeStats> = core
        .last
        .iter()
        .map(|s| {
            let state = core.state.nodes.get(&s.node).cloned().unwrap_or_default();
            NodeStats {
                node: s.node.clone(),
                role: NodeRole::Primary,
                up: !core.unreachable.iter().any(|(n, _)| n == &s.node),
                used_bytes: s.used_memory,
                maxmemory_bytes: s.maxmemory,
                limit_bytes: s.limit,
                limit_source: s.limit_source,
                used_ratio: s.used_ratio(),
                keys: s.keys,
                evicted_keys_total: s.evicted_keys,
                oom_rejections_total: s.oom_rejections,
                levels_raised: state.levels.raised_levels(&settings.memory).to_vec(),
                leeway_raised_hours: state
                    .leeway
                    .raised_levels(&settings.leeway)
                    .iter()
                    .map(|s| s / 3600.0)
                    .collect(),
                forecast: core
                    .forecasts
                    .iter()
                    .find(|(n, _)| n == &s.node)
                    .and_then(|(_, f)| *f),
            }
        })
        .collect();
    let add_down = |nodes: &mut Vec<NodeStats>, node: &str, role: NodeRole, up: bool| {
        if !nodes.iter().any(|n| n.node == node) && node != "all" {
            nodes.push(NodeStats::unread(node, role, up));
        }
    };
    // Nodes that failed this round and were never read still show as down.
    for (node, _) in &core.unreachable {
        add_down(&mut nodes, node, NodeRole::Primary, false);
    }
    // Replicas as their primaries list them, then those seen before and
    // listed by nobody now.
    for sample in &core.last {
        for (replica, online) in &sample.replicas {
            add_down(&mut nodes, replica, NodeRole::Replica, *online);
        }
    }
    for replica in core.state.replicas.keys() {
        add_down(&mut nodes, replica, NodeRole::Replica, false);
    }
    // Primaries seen before and neither read nor listed as a replica now:
    // lost (a failover promoted another node).
    for node in core.state.nodes.keys() {
        add_down(&mut nodes, node, NodeRole::Primary, false);
    }
    nodes.sort_by(|a, b| a.node.cmp(&b.node));
    GuardStats {
        total_used_bytes: core.last.iter().map(|s| s.used_memory).sum(),
        total_limit_bytes: core.last.iter().map(|s| s.limit).sum(),
        total_forecast: core.total_forecast,
        nodes,
        samples_total: core.samples,
        sample_errors_total: core.sample_errors,
        last_sample_ms: core.last_sample_ms,
        alerts_sent_total: core
            .alerts_sent
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect(),
        alerts_held_back_total: core.alerts_held_back,
        alert_failures_total: core.alert_failures,
        recent_alerts: core.recent_alerts.iter().cloned().collect(),
        report: core.report.as_ref().map(|r| ReportStats {
            at_ms: r.at_ms,
            duration_secs: r.duration_secs,
            commands: r.commands,
            budget_per_node: r.budget_per_node,
            keys_total: r.keys_total,
            keys_scanned: r.keys_scanned,
            families: r
                .families
                .iter()
                .take(STATS_FAMILIES)
                .map(|f| FamilyStats {
                    pattern: f.pattern.clone(),
                    name: f.name.clone(),
                    keys: f.keys,
                    bytes: f.bytes,
                    bytes_error: f.bytes_error,
                    no_ttl_share: f.no_ttl_share,
                    growth_bytes: f.growth_bytes,
                    suspected_leak: f.suspected_leak,
                })
                .collect(),
        }),
        report_errors_total: core.report_errors,
        history_errors_total: core.history_errors,
    }
}
