//! The /v1 contract: authentication, every route, and errors as JSON with
//! stable codes.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::json;

use crate::support::{TOKEN, error_code, server};

#[tokio::test]
async fn the_api_wants_a_valid_bearer_token_or_the_login_cookie() {
    let s = server("").await;
    let bare = s
        .send(Request::get("/v1/queues").body(Body::empty()).unwrap())
        .await;
    assert_eq!(bare.status, StatusCode::UNAUTHORIZED);
    assert_eq!(error_code(&bare), "unauthorized");

    let wrong = s
        .send(
            Request::get("/v1/queues")
                .header("Authorization", "Bearer not-the-token-at-all")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);

    let cookie = s
        .send(
            Request::get("/v1/queues")
                .header("Cookie", format!("plimsoll_token={TOKEN}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(cookie.status, StatusCode::OK);
    assert_eq!(
        s.call("GET", "/v1/queues", None).await.status,
        StatusCode::OK
    );

    // Health checks and the API description need no token.
    for open in ["/healthz", "/readyz", "/v1/openapi.json"] {
        let reply = s
            .send(Request::get(open).body(Body::empty()).unwrap())
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{open}");
    }
}

#[tokio::test]
async fn jobs_go_through_their_whole_life_over_http() {
    let s = server("").await;
    let created = s
        .call(
            "POST",
            "/v1/queues/mail/jobs",
            Some(
                json!({"payload": {"to": "a@example.com"}, "priority": 1, "max_attempts": 3,
                        "timeout_ms": 5000, "idempotency_key": "m-1"}),
            ),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let id = created.json["id"].as_u64().unwrap();
    assert_eq!(created.json["duplicate"], false);

    let again = s
        .call(
            "POST",
            "/v1/queues/mail/jobs",
            Some(json!({"payload": {"to": "other"}, "idempotency_key": "m-1"})),
        )
        .await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.json, json!({"id": id, "duplicate": true}));

    let job = s
        .call("GET", &format!("/v1/queues/mail/jobs/{id}"), None)
        .await;
    assert_eq!(job.status, StatusCode::OK);
    assert_eq!(job.json["state"], "waiting");
    assert_eq!(job.json["priority"], 1);
    assert_eq!(job.json["max_attempts"], 3);
    assert_eq!(job.json["payload"], json!({"to": "a@example.com"}));

    let bulk = s
        .call(
            "POST",
            "/v1/queues/mail/jobs/bulk",
            Some(json!({"jobs": [
                {"payload": 1}, {"payload_base64": "AAEC"}, {"payload": "later", "delay_ms": 60000}
            ]})),
        )
        .await;
    assert_eq!(bulk.status, StatusCode::CREATED, "{}", bulk.text);
    let ids: Vec<u64> = bulk.json["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids.len(), 3);
    let binary = s
        .call("GET", &format!("/v1/queues/mail/jobs/{}", ids[1]), None)
        .await;
    assert_eq!(binary.json["payload_base64"], "AAEC");

    let waiting = s
        .call("GET", "/v1/queues/mail/jobs?state=waiting&limit=10", None)
        .await;
    assert_eq!(waiting.json.as_array().unwrap().len(), 3);
    let scheduled = s
        .call("GET", "/v1/queues/mail/jobs?state=scheduled", None)
        .await;
    assert_eq!(scheduled.json[0]["id"], ids[2]);

    let queue = s.call("GET", "/v1/queues/mail", None).await;
    assert_eq!(queue.json["counts"]["waiting"], 3);
    assert_eq!(queue.json["counts"]["scheduled"], 1);
    assert_eq!(queue.json["totals"]["enqueued"], 4);
    assert!(queue.json["memory_bytes"].as_u64().unwrap() > 0);
    let all = s.call("GET", "/v1/queues", None).await;
    assert_eq!(all.json[0]["name"], "mail");

    assert_eq!(
        s.call("POST", "/v1/queues/mail/pause", None).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        s.call("GET", "/v1/queues/mail", None).await.json["paused"],
        true
    );
    assert_eq!(
        s.call("POST", "/v1/queues/mail/resume", None).await.status,
        StatusCode::NO_CONTENT
    );

    let cancel = s
        .call("DELETE", &format!("/v1/queues/mail/jobs/{}", ids[2]), None)
        .await;
    assert_eq!(
        cancel.json,
        json!({"cancelled": true, "state": "scheduled"})
    );
    let gone = s
        .call("DELETE", &format!("/v1/queues/mail/jobs/{}", ids[2]), None)
        .await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    assert_eq!(error_code(&gone), "not_found");
}

#[tokio::test]
async fn dead_jobs_are_listed_retried_and_purged_over_http() {
    let s = server("").await;
    let queue = s.state.queue("reports").unwrap();
    let first = queue
        .enqueue(plimsoll::NewJob::bytes("a").max_attempts(1))
        .await
        .unwrap()
        .id;
    let second = queue
        .enqueue(plimsoll::NewJob::bytes("b").max_attempts(1))
        .await
        .unwrap()
        .id;
    let worker = plimsoll::Worker::builder(queue.clone())
        .start(|_job: plimsoll::Job| async { plimsoll::Outcome::fail("broken") })
        .unwrap();
    crate::support::eventually(
        std::time::Duration::from_secs(10),
        "two dead jobs",
        || async { queue.counts().await.unwrap().dead == 2 },
    )
    .await;
    worker.shutdown().await.unwrap();

    let dead = s.call("GET", "/v1/queues/reports/dead", None).await;
    assert_eq!(dead.json.as_array().unwrap().len(), 2);
    assert_eq!(dead.json[0]["last_error"], "broken");

    let retried = s
        .call(
            "POST",
            &format!("/v1/queues/reports/jobs/{first}/retry"),
            None,
        )
        .await;
    assert_eq!(retried.json, json!({"count": 1}));
    let not_dead = s
        .call(
            "POST",
            &format!("/v1/queues/reports/jobs/{first}/retry"),
            None,
        )
        .await;
    assert_eq!(not_dead.status, StatusCode::NOT_FOUND);

    let purged = s
        .call(
            "POST",
            "/v1/queues/reports/dead/purge",
            Some(json!({"ids": [second]})),
        )
        .await;
    assert_eq!(purged.json, json!({"count": 1}));
    let ambiguous = s
        .call(
            "POST",
            "/v1/queues/reports/dead/retry",
            Some(json!({"ids": [1], "all": true})),
        )
        .await;
    assert_eq!(ambiguous.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        s.call(
            "POST",
            "/v1/queues/reports/dead/retry",
            Some(json!({"all": true}))
        )
        .await
        .json["count"],
        0
    );
}

#[tokio::test]
async fn every_error_is_json_with_a_stable_code_and_says_what_was_wrong() {
    let s = server("max_body = \"4KiB\"").await;
    let cases: Vec<(Request<Body>, StatusCode, &str, &str)> = vec![
        (
            post("/v1/queues/q/jobs", "{not json"),
            StatusCode::BAD_REQUEST,
            "invalid_json",
            "not JSON",
        ),
        (
            post("/v1/queues/q/jobs", r#"{"payload": 1, "priority": "high"}"#),
            StatusCode::BAD_REQUEST,
            "invalid_input",
            "priority",
        ),
        (
            post("/v1/queues/q/jobs", r#"{"payload": 1, "colour": "red"}"#),
            StatusCode::BAD_REQUEST,
            "invalid_input",
            "colour",
        ),
        (
            post("/v1/queues/q/jobs", r#"{"payload": 1, "priority": 12}"#),
            StatusCode::BAD_REQUEST,
            "invalid_input",
            "priority 12",
        ),
        (
            post("/v1/queues/q/jobs", r#"{}"#),
            StatusCode::BAD_REQUEST,
            "invalid_input",
            "payload",
        ),
        (
            // serde would read a struct from an array of its fields: an
            // empty bulk call that enqueues nothing and says 201.
            post("/v1/queues/q/jobs/bulk", "[[]]"),
            StatusCode::BAD_REQUEST,
            "invalid_input",
            "JSON object",
        ),
        (
            post("/v1/queues/bad%20name/jobs", r#"{"payload": 1}"#),
            StatusCode::BAD_REQUEST,
            "invalid_input",
            "queue name",
        ),
        (
            post(
                "/v1/queues/q/jobs",
                &format!(r#"{{"payload": "{}"}}"#, "x".repeat(5000)),
            ),
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "larger",
        ),
        (
            Request::post("/v1/queues/q/jobs")
                .header("Authorization", format!("Bearer {TOKEN}"))
                .body(Body::from(r#"{"payload": 1}"#))
                .unwrap(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "Content-Type",
        ),
        (
            get("/v1/queues/q/jobs/zero"),
            StatusCode::BAD_REQUEST,
            "invalid_input",
            "job id",
        ),
        (
            get("/v1/queues/q/jobs?state=lost"),
            StatusCode::BAD_REQUEST,
            "invalid_input",
            "lost",
        ),
        (
            get("/v1/queues/q/jobs?limit=ten"),
            StatusCode::BAD_REQUEST,
            "invalid_input",
            "limit",
        ),
        (
            get("/v1/nothing-here"),
            StatusCode::NOT_FOUND,
            "not_found",
            "openapi",
        ),
        (
            Request::put("/v1/queues")
                .header("Authorization", format!("Bearer {TOKEN}"))
                .body(Body::empty())
                .unwrap(),
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "method",
        ),
    ];
    for (request, status, code, mention) in cases {
        let uri = request.uri().to_string();
        let reply = s.send(request).await;
        assert_eq!(reply.status, status, "{uri}: {}", reply.text);
        assert_eq!(error_code(&reply), code, "{uri}");
        let message = reply.json["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(mention),
            "{uri}: {message:?} lacks {mention:?}"
        );
    }
}

#[tokio::test]
async fn a_down_redis_is_a_503_that_names_no_internals() {
    let mut s = server("").await;
    s.redis_server.kill();
    let reply = s
        .call("POST", "/v1/queues/q/jobs", Some(json!({"payload": 1})))
        .await;
    assert_eq!(
        reply.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        reply.text
    );
    assert_eq!(error_code(&reply), "redis_unavailable");
    assert!(reply.headers.contains_key("retry-after"));
    assert!(
        !reply.text.contains("127.0.0.1"),
        "no internal detail: {}",
        reply.text
    );
    let ready = s
        .send(Request::get("/readyz").body(Body::empty()).unwrap())
        .await;
    assert!(
        ready.json["degraded"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d.as_str().unwrap().starts_with("redis")),
        "{}",
        ready.text
    );
}

#[tokio::test]
async fn the_openapi_document_describes_every_route() {
    let s = server("").await;
    let doc = s
        .send(
            Request::get("/v1/openapi.json")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    let paths = doc.json["paths"].as_object().unwrap();
    for path in [
        "/v1/queues",
        "/v1/queues/{queue}",
        "/v1/queues/{queue}/jobs",
        "/v1/queues/{queue}/jobs/bulk",
        "/v1/queues/{queue}/jobs/{id}",
        "/v1/queues/{queue}/jobs/{id}/retry",
        "/v1/queues/{queue}/pause",
        "/v1/queues/{queue}/resume",
        "/v1/queues/{queue}/dead",
        "/v1/queues/{queue}/dead/retry",
        "/v1/queues/{queue}/dead/purge",
        "/v1/spool",
        "/hooks/{source}",
        "/healthz",
        "/readyz",
    ] {
        assert!(
            paths.contains_key(path),
            "{path} missing from the OpenAPI document"
        );
    }
    assert_eq!(
        doc.json["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
}

fn post(uri: &str, body: &str) -> Request<Body> {
    Request::post(uri)
        .header("Authorization", format!("Bearer {TOKEN}"))
        .header("Content-Type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

fn get(uri: &str) -> Request<Body> {
    Request::get(uri)
        .header("Authorization", format!("Bearer {TOKEN}"))
        .body(Body::empty())
        .unwrap()
}

#[tokio::test]
async fn the_cache_is_served_over_http_and_never_fails_because_of_redis() {
    let mut s = server("[cache]\ntimeout = \"50ms\"\n").await;
    // The cache connects in the background.
    crate::support::eventually(
        std::time::Duration::from_secs(5),
        "the cache to connect",
        || async {
            s.call(
                "PUT",
                "/v1/cache/greeting",
                Some(json!({"value": {"hello": "world"}, "ttl_ms": 60000})),
            )
            .await
            .json["written"]
                == "applied"
        },
    )
    .await;
    let got = s.call("GET", "/v1/cache/greeting", None).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.json["value"], json!({"hello": "world"}));
    let ttl: i64 = s
        .redis_server
        .cmd(&["PTTL", "plimsoll:cache:http:greeting"])
        .parse()
        .unwrap();
    assert!(ttl > 0 && ttl <= 60_000, "the key has its TTL: {ttl}");

    let miss = s.call("GET", "/v1/cache/nothing", None).await;
    assert_eq!(miss.status, StatusCode::NOT_FOUND);
    assert_eq!(error_code(&miss), "cache_miss");
    let bad_ttl = s
        .call("PUT", "/v1/cache/x", Some(json!({"value": 1, "ttl_ms": 0})))
        .await;
    assert_eq!(bad_ttl.status, StatusCode::BAD_REQUEST);

    assert_eq!(
        s.call("DELETE", "/v1/cache/greeting", None).await.json["written"],
        "applied"
    );

    // Redis gone: reads are misses, writes say they were not applied.
    s.redis_server.kill();
    let started = std::time::Instant::now();
    let read = s.call("GET", "/v1/cache/greeting", None).await;
    assert_eq!(read.status, StatusCode::NOT_FOUND);
    let write = s
        .call("PUT", "/v1/cache/k", Some(json!({"value": 2})))
        .await;
    assert_eq!(write.status, StatusCode::OK);
    assert_ne!(write.json["written"], "applied");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(2),
        "within the budget"
    );
}

#[tokio::test]
async fn metrics_cover_queues_intake_spool_cache_and_guard_and_pass_promtool() {
    let s = server("[hooks.github]\nsecret = \"metrics-secret\"\n").await;
    s.call("POST", "/v1/queues/mail/jobs", Some(json!({"payload": 1})))
        .await;
    s.send(
        Request::post("/hooks/github")
            .body(Body::from("{}"))
            .unwrap(),
    )
    .await;
    let guard = s.state.guard().unwrap();
    guard.sample_once().await.unwrap();
    // What the sampler would have done.
    let queue = s.state.queue("mail").unwrap();
    let counts = queue.counts().await.unwrap();
    s.state.metrics().update(|m| {
        m.queues.insert("mail".into(), counts);
        m.cache = Some(s.state.cache().stats());
    });

    let text = plimsoll_server::metrics_text(&s.state);
    for family in [
        "plimsoll_http_requests_total{",
        "plimsoll_intake_webhooks_total{source=\"github\",outcome=\"unauthorized\"} 1",
        "plimsoll_queue_jobs{queue=\"mail\",state=\"waiting\"} 1",
        "plimsoll_queue_events_total{queue=\"mail\",event=\"enqueued\"} 1",
        "plimsoll_cache_breaker_state{kind=\"closed\"} 1",
        "plimsoll_spool_records 0",
        "plimsoll_guard_used_memory_bytes{",
    ] {
        assert!(text.contains(family), "{family} missing from:\n{text}");
    }
    crate::metrics::assert_each_family_once(&text);
    // Prometheus' own linter accepts it (promtool comes with the test tools).
    plimsoll_test_support::assert_promtool_accepts(&text);
}

#[tokio::test]
async fn the_guard_is_served_over_http() {
    let s = server("").await;
    let status = s.call("GET", "/v1/guard", None).await;
    assert_eq!(status.status, StatusCode::OK);
    assert_eq!(status.json["samples_total"], 0);
    let none_yet = s.call("GET", "/v1/guard/memory", None).await;
    assert_eq!(error_code(&none_yet), "no_report");

    let guard = s.state.guard().unwrap();
    guard.sample_once().await.unwrap();
    guard.attribute_once().await.unwrap();
    let status = s.call("GET", "/v1/guard", None).await;
    assert_eq!(status.json["samples_total"], 1);
    assert!(status.json["nodes"][0]["used_bytes"].as_u64().unwrap() > 0);
    assert_eq!(
        s.call("GET", "/v1/guard/memory", None).await.status,
        StatusCode::OK
    );
    assert!(
        s.call("GET", "/v1/guard/alerts", None)
            .await
            .json
            .is_array()
    );

    let off = server("[guard]\ndisabled = true\n").await;
    let reply = off.call("GET", "/v1/guard", None).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(error_code(&reply), "guard_disabled");
}

#[tokio::test]
async fn a_filling_spool_raises_an_alert_and_clears_it() {
    let mut s = server(
        "[spool]\nmax_bytes = \"1MiB\"\nwarn_at = 0.2\n[hooks.plain]\ndelivery_header = \"\"\n",
    )
    .await;
    s.redis_server.kill();
    let body = json!({"pad": "p".repeat(4000)}).to_string();
    while s.state.spool().stats().bytes < 300 * 1024 {
        let reply = s
            .send(
                Request::post("/hooks/plain")
                    .body(Body::from(body.clone()))
                    .unwrap(),
            )
            .await;
        assert_eq!(reply.status, StatusCode::ACCEPTED);
    }
    plimsoll_server::sampler::watch_spool(&s.state).await;
    let alerts = s.state.guard().unwrap().stats().recent_alerts;
    let alert = alerts.last().expect("an alert");
    assert_eq!(alert.kind.name(), "spool_filling");
    assert!(
        alert.summary.contains("webhooks waiting for Redis"),
        "{}",
        alert.summary
    );
    // Raised once, not on every round.
    plimsoll_server::sampler::watch_spool(&s.state).await;
    assert_eq!(s.state.guard().unwrap().stats().recent_alerts.len(), 1);

    // Redis back, the spool drains, the alert clears.
    s.redis_server.restart();
    let stop = tokio_util::sync::CancellationToken::new();
    let replayer = plimsoll::service::spawn(
        plimsoll_server::intake::replay::Replayer::new(s.state.clone()),
        stop.clone(),
    );
    crate::support::eventually(
        std::time::Duration::from_secs(20),
        "the spool to drain",
        || async { s.state.spool().is_empty() },
    )
    .await;
    plimsoll_server::sampler::watch_spool(&s.state).await;
    let alerts = s.state.guard().unwrap().stats().recent_alerts;
    assert_eq!(alerts.last().unwrap().kind.name(), "spool_cleared");
    stop.cancel();
    replayer.await.unwrap();
}
