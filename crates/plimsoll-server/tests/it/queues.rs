//! Queues as a whole over HTTP: deleting one, and the cap on their number.

use axum::http::StatusCode;
use serde_json::json;

use crate::support::{error_code, server};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_is_deleted_over_http_with_its_jobs_and_registry_entry() {
    let s = server("").await;
    for i in 0..3 {
        let reply = s
            .call(
                "POST",
                "/v1/queues/old/jobs",
                Some(json!({"payload": {"n": i}})),
            )
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    }
    let reply = s.call("DELETE", "/v1/queues/old", None).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.json["jobs"], 3);
    assert!(reply.json["keys"].as_u64().unwrap() > 0);
    let keys = s.redis_server.keys();
    assert!(keys.iter().all(|k| !k.contains("{old}")), "{keys:?}");
    assert_eq!(
        s.redis_server.cmd(&["SISMEMBER", "plimsoll:queues", "old"]),
        "0"
    );
    let listed = s.call("GET", "/v1/queues", None).await;
    assert_eq!(
        listed.json.as_array().map(Vec::len),
        Some(0),
        "{}",
        listed.text
    );

    let reply = s.call("DELETE", "/v1/queues/old?force=maybe", None).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text);
}

#[tokio::test]
async fn a_new_queue_beyond_the_cap_is_a_409_and_writes_nothing() {
    let s = server("").await;
    // The registry is full (the default cap: 1,000 queues).
    let names: Vec<String> = (0..plimsoll::queue::DEFAULT_MAX_QUEUES)
        .map(|i| format!("made-up-{i}"))
        .collect();
    let mut sadd = vec!["SADD", "plimsoll:queues"];
    sadd.extend(names.iter().map(String::as_str));
    s.redis_server.cmd(&sadd);
    let reply = s
        .call(
            "POST",
            "/v1/queues/one-more/jobs",
            Some(json!({"payload": 1})),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CONFLICT, "{}", reply.text);
    assert_eq!(error_code(&reply), "too_many_queues");
    assert!(
        s.redis_server
            .keys()
            .iter()
            .all(|k| !k.contains("{one-more}"))
    );
    // A registered queue goes on.
    let reply = s
        .call(
            "POST",
            "/v1/queues/made-up-7/jobs",
            Some(json!({"payload": 1})),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
}

/// API callers could fill the registry with invented queue names; the
/// server's own queues, first used after that (a deploy that adds a webhook
/// source, a registry that lost them), were then refused with 409, and
/// webhooks to them with them. The queues the configuration names are
/// registered beyond the cap; `redis.max_queues` sets the cap.
#[tokio::test]
async fn queues_api_callers_invent_never_lock_out_the_configured_ones() {
    let s = server(
        "[redis]\nmax_queues = 3\n[queues.billing]\nmax_attempts = 3\n[hooks.github]\ndelivery_header = \"\"\n",
    )
    .await;
    for name in ["made-up-1", "made-up-2", "made-up-3"] {
        let reply = s
            .call(
                "POST",
                &format!("/v1/queues/{name}/jobs"),
                Some(json!({"payload": 1})),
            )
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{name}: {}", reply.text);
    }
    let reply = s
        .call(
            "POST",
            "/v1/queues/made-up-4/jobs",
            Some(json!({"payload": 1})),
        )
        .await;
    assert_eq!(error_code(&reply), "too_many_queues", "{}", reply.text);

    // Full for invented names; not for the configured queue, nor the
    // webhook source's.
    let reply = s
        .call(
            "POST",
            "/v1/queues/billing/jobs",
            Some(json!({"payload": 1})),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    let reply = s
        .send(
            axum::http::Request::post("/hooks/github")
                .header("Content-Type", "application/json")
                .body(axum::body::Body::from("{}"))
                .unwrap(),
        )
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text);
    assert_eq!(reply.json["spooled"], false, "{}", reply.text);
    let registered = s.redis_server.cmd(&["SMEMBERS", "plimsoll:queues"]);
    let mut registered: Vec<&str> = registered.split_whitespace().collect();
    registered.sort();
    assert_eq!(
        registered,
        [
            "billing",
            "hooks.github",
            "made-up-1",
            "made-up-2",
            "made-up-3"
        ]
    );
}
