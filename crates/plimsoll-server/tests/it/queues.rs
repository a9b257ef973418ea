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
