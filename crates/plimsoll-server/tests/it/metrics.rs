//! `/metrics` as Prometheus reads it: one exposition, each family declared
//! once with its samples together, accepted by promtool.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use plimsoll::service::Service;
use plimsoll_server::app;
use plimsoll_server::sampler::Sampler;
use tower::ServiceExt;

use crate::support::{RedisCluster, TOKEN, state_on_cluster};

/// Asserts that every family of `text` is declared once (`# TYPE`) and
/// that every sample sits in the block of its family.
pub fn assert_each_family_once(text: &str) {
    let mut family = String::new();
    let mut declared = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            family = rest.split(' ').next().unwrap().to_string();
            assert!(
                declared.insert(family.clone()),
                "{family} declared twice:\n{text}"
            );
        } else if !line.starts_with('#') && !line.is_empty() {
            let name = line.split(['{', ' ']).next().unwrap();
            let in_block = name == family
                || ["_bucket", "_sum", "_count"]
                    .iter()
                    .any(|suffix| name.strip_suffix(suffix) == Some(family.as_str()));
            assert!(in_block, "a sample of {name} outside its block:\n{text}");
        }
    }
}

// The server's and the guard's metrics come from one registry; on a
// cluster the guard writes a sample per primary, and each family must still
// be declared once with its samples together.
#[tokio::test]
async fn metrics_of_a_three_primary_cluster_declare_each_family_once_and_pass_promtool() {
    let cluster = RedisCluster::start();
    let (state, _dir) =
        state_on_cluster(&cluster, "[hooks.github]\nsecret = \"metrics-secret\"\n").await;
    let enqueue = Request::post("/v1/queues/mail/jobs")
        .header("Authorization", format!("Bearer {TOKEN}"))
        .header("Content-Type", "application/json")
        .body(Body::from(r#"{"payload": 1}"#))
        .unwrap();
    let reply = app(state.clone()).oneshot(enqueue).await.unwrap();
    assert_eq!(reply.status(), StatusCode::CREATED);
    let guard = state.guard().unwrap();
    guard.sample_once().await.unwrap();
    guard.attribute_once().await.unwrap();
    Sampler::new(state.clone(), Arc::default())
        .run_once()
        .await
        .unwrap();

    let text = plimsoll_server::metrics_text(&state);
    let nodes = text
        .lines()
        .filter(|l| l.starts_with("plimsoll_guard_up{"))
        .count();
    assert_eq!(nodes, 3, "{text}");
    for series in [
        "plimsoll_http_requests_total{",
        "plimsoll_queue_jobs{queue=\"mail\",state=\"waiting\"} 1",
        "plimsoll_guard_family_bytes{",
    ] {
        assert!(text.contains(series), "{series} missing from:\n{text}");
    }
    assert_each_family_once(&text);
    assert!(
        !text.contains("# EOF"),
        "the classic text format has no EOF marker"
    );
    plimsoll_test_support::assert_promtool_accepts(&text);
}
