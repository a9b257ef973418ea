//! The dashboard's memory part: Redis' memory against its limit, the
//! guard's forecast with its chart, and the key families of the latest
//! memory report.

use super::chart;
use super::html::human_bytes;
use super::html::{self, escape};

pub(super) fn memory_summary(used: u64, maxmemory: u64) -> String {
    let limit = if maxmemory == 0 {
        "<span class=\"bad\">no maxmemory: this Redis can grow until the machine runs out</span>"
            .to_string()
    } else {
        format!(
            "of {} maxmemory ({:.1}%)",
            human_bytes(maxmemory),
            used as f64 / maxmemory as f64 * 100.0,
        )
    };
    format!(
        "<p><span class=\"figure\">{}</span> used {limit}</p>",
        human_bytes(used)
    )
}

/// Memory now, the forecast, the chart, and the alerts: active (levels
/// raised now) and past (the latest sent).
pub(super) fn memory_section(guard: &plimsoll::Guard) -> String {
    let stats = guard.stats();
    let mut out = String::from("<section class=\"card\" id=\"memory\">");
    let maxmemory: u64 = stats.nodes.iter().map(|n| n.maxmemory_bytes).sum();
    if stats.nodes.is_empty() {
        out.push_str(
            "<p class=\"muted\">No reading yet; the guard reads Redis every few seconds.</p>",
        );
    } else {
        out.push_str(&memory_summary(stats.total_used_bytes, maxmemory));
        if maxmemory == 0 {
            out.push_str(&format!(
                "<p class=\"muted\">Measured against {} instead.</p>",
                human_bytes(stats.total_limit_bytes)
            ));
        }
    }
    let forecast = stats.total_forecast;
    out.push_str(&format!(
        "<p id=\"forecast-text\">{}</p>",
        forecast_text(forecast.as_ref())
    ));
    let series: Vec<(u64, u64)> = guard
        .memory_series()
        .into_iter()
        .map(|(t, v)| (t, v.max(0.0) as u64))
        .collect();
    let line = forecast.as_ref().and_then(|f| forecast_line(&series, f));
    out.push_str(&chart::chart(
        &series,
        stats.total_limit_bytes,
        line.as_deref(),
    ));
    if stats.nodes.len() > 1 {
        out.push_str("<table id=\"nodes\"><tr><th>Node</th><th class=\"num\">Used</th><th class=\"num\">Limit</th><th class=\"num\">%</th><th>Full in</th></tr>");
        for node in &stats.nodes {
            if node.role == plimsoll::guard::stats::NodeRole::Replica {
                // Only whether a replica is online is known.
                out.push_str(&format!(
                    "<tr><td>{} <span class=\"pill\">replica</span>{}</td><td colspan=\"4\">{}</td></tr>",
                    escape(&node.node),
                    if node.up { "" } else { " <span class=\"pill bad\">down</span>" },
                    if node.up { "online" } else { "not listed online by its primary: lost redundancy" },
                ));
                continue;
            }
            out.push_str(&format!(
                "<tr><td>{}{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{:.1}</td><td>{}</td></tr>",
                escape(&node.node),
                if node.up { "" } else { " <span class=\"pill bad\">down</span>" },
                human_bytes(node.used_bytes),
                human_bytes(node.limit_bytes),
                node.used_ratio * 100.0,
                node.forecast
                    .and_then(|f| f.time_to_full_secs)
                    .map(html::fmt_duration)
                    .unwrap_or_else(|| "—".into()),
            ));
        }
        out.push_str("</table>");
    }
    out.push_str("<h3>Alerts</h3><div id=\"alerts\">");
    let active: Vec<String> = stats
        .nodes
        .iter()
        .flat_map(|n| {
            n.levels_raised
                .iter()
                .map(move |l| format!("{}: above {:.0}%", n.node, l * 100.0))
                .chain(
                    n.leeway_raised_hours
                        .iter()
                        .map(move |h| format!("{}: full in less than {h:.0} h", n.node)),
                )
        })
        .collect();
    if active.is_empty() {
        out.push_str("<p class=\"ok\">No alert is active.</p>");
    } else {
        out.push_str("<ul class=\"active-alerts\">");
        for a in active {
            out.push_str(&format!("<li class=\"bad\">{}</li>", escape(&a)));
        }
        out.push_str("</ul>");
    }
    if !stats.recent_alerts.is_empty() {
        out.push_str(
            "<table class=\"past-alerts\"><tr><th>When</th><th>Severity</th><th>What</th></tr>",
        );
        for alert in stats.recent_alerts.iter().rev().take(20) {
            let class = match alert.severity {
                plimsoll::guard::Severity::Critical => "bad",
                plimsoll::guard::Severity::Warning => "warn",
                plimsoll::guard::Severity::Info => "ok",
            };
            out.push_str(&format!(
                "<tr><td>{}</td><td><span class=\"pill {class}\">{:?}</span></td><td>{}</td></tr>",
                html::fmt_time(alert.at_ms),
                alert.severity,
                escape(&alert.summary)
            ));
        }
        out.push_str("</table>");
    }
    out.push_str("</div></section>");
    out
}

fn forecast_text(forecast: Option<&plimsoll::Forecast>) -> String {
    match forecast {
        None => "<span class=\"muted\">Forecast: not enough history yet.</span>".into(),
        Some(f) => match f.time_to_full_secs {
            Some(ttf) => format!(
                "Growing {}/h: <span class=\"{}\">full in {}</span> (95%: {} to {}).",
                human_bytes((f.growth_bytes_per_sec * 3600.0).max(0.0) as u64),
                if ttf < 48.0 * 3600.0 {
                    "bad"
                } else if ttf < 72.0 * 3600.0 {
                    "warn"
                } else {
                    "ok"
                },
                html::fmt_duration(ttf),
                f.time_to_full_low_secs
                    .map(html::fmt_duration)
                    .unwrap_or_else(|| "—".into()),
                f.time_to_full_high_secs
                    .map(html::fmt_duration)
                    .unwrap_or_else(|| "never".into()),
            ),
            None => format!(
                "<span class=\"ok\">Not filling</span> (growth {}/h).",
                html::human_signed_bytes(f.growth_bytes_per_sec * 3600.0)
            ),
        },
    }
}

/// The forecast as a line from the last reading towards the limit: to the
/// time of full when that is near, else as far as three times the history
/// shown (so a far-off fill does not squash the chart).
fn forecast_line(series: &[chart::Point], f: &plimsoll::Forecast) -> Option<Vec<chart::Point>> {
    let &(last_t, _) = series.last()?;
    let first_t = series.first()?.0;
    let ttf_ms = f.time_to_full_secs? * 1000.0;
    let horizon = (last_t.saturating_sub(first_t) as f64 * 3.0).max(3_600_000.0);
    let span = ttf_ms.min(horizon);
    let end_value = f.peak_bytes + f.growth_bytes_per_sec * span / 1000.0;
    Some(vec![
        (last_t, f.peak_bytes.max(0.0) as u64),
        (
            last_t.saturating_add(span as u64),
            end_value.max(0.0) as u64,
        ),
    ])
}

pub(super) fn families_section(guard: &plimsoll::Guard) -> String {
    let Some(report) = guard.stats().report else {
        return "<section class=\"card\" id=\"families\"><p class=\"muted\">No memory report yet: the guard walks the keyspace on a schedule, within a command budget.</p></section>".into();
    };
    let mut out = format!(
        "<section class=\"card\" id=\"families\"><p class=\"muted\">{} keys, {} scanned in {:.1} s with {} commands, at {}.</p>\
         <table><tr><th>Family</th><th class=\"num\">Keys</th><th class=\"num\">Bytes</th><th class=\"num\">No TTL</th><th class=\"num\">Growth</th><th></th></tr>",
        report.keys_total,
        report.keys_scanned,
        report.duration_secs,
        report.commands,
        html::fmt_time(report.at_ms),
    );
    for family in report.families.iter().take(15) {
        out.push_str(&format!(
            "<tr><td title=\"{}\">{}</td><td class=\"num\">{}</td><td class=\"num\">{} ± {}</td>\
             <td class=\"num\">{:.0}%</td><td class=\"num\">{}</td><td>{}</td></tr>",
            escape(&family.pattern),
            escape(&family.name),
            family.keys,
            human_bytes(family.bytes),
            human_bytes(family.bytes_error),
            family.no_ttl_share * 100.0,
            family
                .growth_bytes
                .map(|g| html::human_signed_bytes(g as f64))
                .unwrap_or_else(|| "—".into()),
            if family.suspected_leak {
                "<span class=\"pill bad\">suspected leak</span>"
            } else {
                ""
            },
        ));
    }
    out.push_str("</table></section>");
    out
}
