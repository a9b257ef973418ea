//! Push delivery to an HTTP target: signed POSTs, retries on 5xx, the dead
//! set on a 4xx.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use plimsoll_server::signing::verify;
use serde_json::json;

use crate::support::{eventually, server};

#[derive(Clone, Default)]
struct Received(Arc<Mutex<Vec<(HeaderMap, Bytes)>>>);

async fn target(State(received): State<Received>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let attempt: u32 = headers["x-plimsoll-attempt"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let payload: serde_json::Value = serde_json::from_slice(&body).unwrap();
    received.0.lock().unwrap().push((headers, body));
    match payload["kind"].as_str() {
        Some("flaky") if attempt == 1 => StatusCode::SERVICE_UNAVAILABLE,
        Some("rejected") => StatusCode::UNPROCESSABLE_ENTITY,
        _ => StatusCode::NO_CONTENT,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_are_posted_signed_retried_on_5xx_and_dead_on_4xx() {
    let received = Received::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = Router::new()
        .route("/deliver", post(target))
        .with_state(received.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let s = server(&format!(
        "[queues.outbox]\nmax_attempts = 3\n[queues.outbox.push]\nurl = \"http://127.0.0.1:{port}/deliver\"\n\
         secret = \"push-secret\"\nconcurrency = 2\nrate_per_second = 50\n"
    ))
    .await;
    let settings = s
        .state
        .config()
        .queues
        .values()
        .next()
        .unwrap()
        .push
        .clone()
        .unwrap();
    let worker = plimsoll_server::push::start(&s.state, "outbox", settings).unwrap();

    for kind in ["ok", "flaky", "rejected"] {
        let reply = s
            .call(
                "POST",
                "/v1/queues/outbox/jobs",
                Some(json!({"payload": {"kind": kind}})),
            )
            .await;
        assert_eq!(reply.status, StatusCode::CREATED);
    }
    let queue = s.state.queue("outbox").unwrap();
    eventually(Duration::from_secs(20), "every job to settle", || async {
        let c = queue.counts().await.unwrap();
        c.totals.completed == 2 && c.dead == 1
    })
    .await;
    worker.shutdown().await.unwrap();

    let received = received.0.lock().unwrap().clone();
    assert_eq!(received.len(), 4, "ok once, flaky twice, rejected once");
    for (headers, body) in received.iter() {
        let signature = headers["x-plimsoll-signature-256"].to_str().unwrap();
        assert!(
            verify(b"push-secret", body, signature, "sha256="),
            "a valid signature"
        );
        assert_eq!(headers["content-type"], "application/json");
        assert_eq!(headers["x-plimsoll-queue"], "outbox");
    }
    let dead = queue.jobs(plimsoll::JobState::Dead, 0, 10).await.unwrap();
    assert!(
        dead[0].last_error.as_deref().unwrap().contains("422"),
        "{:?}",
        dead[0].last_error
    );
    assert_eq!(dead[0].attempts, 1, "a 4xx is not retried");
}
