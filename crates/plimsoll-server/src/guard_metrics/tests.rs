use std::collections::BTreeSet;

use super::*;

/// Names of `plimsoll_guard_*` metrics in a file.
fn names_in(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("plimsoll_guard_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

/// A snapshot with every part filled in.
fn full_stats() -> GuardStats {
    use plimsoll::guard::stats::{FamilyStats, NodeStats, ReportStats};
    use plimsoll::guard::{Forecast, LimitSource};
    let forecast = Forecast {
        growth_bytes_per_sec: 10.0,
        growth_low: 9.0,
        growth_high: 11.0,
        level_bytes: 1e6,
        peak_bytes: 1e6,
        limit_bytes: 1e7,
        time_to_full_secs: Some(9e5),
        time_to_full_low_secs: Some(8e5),
        time_to_full_high_secs: None,
        points: 10,
        span_secs: 600.0,
    };
    GuardStats {
        nodes: vec![NodeStats {
            node: "127.0.0.1:6379".into(),
            role: NodeRole::Primary,
            up: true,
            used_bytes: 1 << 20,
            maxmemory_bytes: 10 << 20,
            limit_bytes: 10 << 20,
            limit_source: LimitSource::Maxmemory,
            used_ratio: 0.1,
            keys: 10,
            evicted_keys_total: 0,
            oom_rejections_total: 0,
            levels_raised: vec![],
            leeway_raised_hours: vec![],
            forecast: Some(forecast),
        }],
        total_used_bytes: 1 << 20,
        total_limit_bytes: 10 << 20,
        total_forecast: Some(forecast),
        samples_total: 3,
        sample_errors_total: 0,
        last_sample_ms: Some(1_700_000_000_000),
        alerts_sent_total: [("level_raised".to_string(), 1)].into(),
        alerts_held_back_total: 0,
        alert_failures_total: 0,
        recent_alerts: vec![],
        report: Some(ReportStats {
            at_ms: 1_700_000_000_000,
            duration_secs: 1.5,
            commands: 100,
            budget_per_node: 4000,
            keys_total: 10,
            keys_scanned: 10,
            families: vec![FamilyStats {
                pattern: "session:<uuid>".into(),
                name: "session \"x\"".into(),
                keys: 10,
                bytes: 1000,
                bytes_error: 10,
                no_ttl_share: 0.0,
                growth_bytes: Some(5),
                suspected_leak: false,
            }],
        }),
        report_errors_total: 0,
        history_errors_total: 0,
    }
}

// On a 3-primary cluster each family was written once per node, so a
// family's samples were split across the output.
#[test]
fn a_clusters_nodes_are_written_family_by_family_and_promtool_accepts_it() {
    let mut stats = full_stats();
    let mut second = stats.nodes[0].clone();
    second.node = "127.0.0.1:6380".into();
    stats.nodes.push(second);
    let text = render(&stats);
    // Every sample line sits in the block of its family's TYPE line.
    let mut family = String::new();
    let mut seen = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            family = rest.split(' ').next().unwrap().to_string();
            assert!(seen.insert(family.clone()), "{family} declared twice");
        } else if !line.starts_with('#') && !line.is_empty() {
            let name = line.split(['{', ' ']).next().unwrap();
            assert_eq!(
                name, family,
                "a sample of {name} outside its block:\n{text}"
            );
        }
    }
    let up = text
        .lines()
        .filter(|l| l.starts_with("plimsoll_guard_up{"))
        .count();
    assert_eq!(up, 2, "{text}");
    plimsoll_test_support::assert_promtool_accepts(&text);
}

#[test]
fn every_listed_metric_is_emitted_once_declared() {
    let text = render(&full_stats());
    for name in METRIC_NAMES {
        assert!(name.starts_with(&format!("{PREFIX}_")), "{name}");
        assert!(
            text.contains(&format!("# TYPE {name} ")),
            "{name} missing from\n{text}"
        );
    }
    assert!(text.contains(r#"name="session \"x\"""#), "{text}");
    assert!(text.contains(
        "plimsoll_guard_memory_limit_bytes{node=\"127.0.0.1:6379\",source=\"maxmemory\"} 10485760"
    ));
}

#[test]
fn the_alert_rules_and_the_dashboard_use_only_emitted_metrics() {
    for (file, text) in [
        (
            "deploy/prometheus/alerts.yml",
            include_str!("../../../../deploy/prometheus/alerts.yml"),
        ),
        (
            "deploy/prometheus/alerts_test.yml",
            include_str!("../../../../deploy/prometheus/alerts_test.yml"),
        ),
        (
            "deploy/grafana/plimsoll-guard.json",
            include_str!("../../../../deploy/grafana/plimsoll-guard.json"),
        ),
    ] {
        let names = names_in(text);
        assert!(!names.is_empty(), "{file} uses no guard metric");
        for name in names {
            assert!(
                METRIC_NAMES.contains(&name.as_str()),
                "{file} uses {name}, which the exporter does not emit"
            );
        }
    }
    // The dashboard is valid JSON.
    let _: serde_json::Value = serde_json::from_str(include_str!(
        "../../../../deploy/grafana/plimsoll-guard.json"
    ))
    .unwrap();
}

/// GET `path` from `addr` with a bare HTTP/1.1 request.
async fn get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
}

#[tokio::test]
async fn a_running_guard_serves_its_metrics() {
    let server = plimsoll_test_support::RedisServer::builder()
        .maxmemory(64 << 20)
        .start();
    let redis = plimsoll::Redis::connect_url(&server.url()).await.unwrap();
    let guard = Guard::new(
        redis,
        plimsoll::GuardConfig {
            sinks: vec![],
            attribute_interval: None,
            ..plimsoll::GuardConfig::default()
        },
    )
    .unwrap();
    guard.sample_once().await.unwrap();
    guard.attribute_once().await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app(guard)).await.unwrap() });
    let metrics = get(addr, "/metrics").await;
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    assert!(metrics.contains("text/plain; version=0.0.4"), "{metrics}");
    let line = format!(
        "plimsoll_guard_maxmemory_bytes{{node=\"127.0.0.1:{}\"}} 67108864",
        server.port()
    );
    assert!(metrics.contains(&line), "{metrics}");
    assert!(
        metrics.contains("plimsoll_guard_report_commands "),
        "{metrics}"
    );
    assert!(get(addr, "/healthz").await.starts_with("HTTP/1.1 200"));
    assert!(get(addr, "/stats").await.contains("\"total_used_bytes\""));
}
