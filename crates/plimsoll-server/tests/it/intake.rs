//! Webhook intake: signatures, duplicates, and never losing a webhook that
//! was answered 2xx — Redis down, Redis full, spool full.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use plimsoll::JobState;
use plimsoll_server::signing::sign;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::support::{RedisServer, TestServer, error_code, eventually, server, server_on};

const SECRET: &str = "It's a Secret to Everybody";
const CONFIG: &str = r#"
[hooks.github]
secret = "It's a Secret to Everybody"

[hooks.plain]
delivery_header = "X-Delivery"
max_body = "2KiB"
"#;

fn github(body: &str, delivery: &str) -> Request<Body> {
    Request::post("/hooks/github")
        .header("Content-Type", "application/json")
        .header("X-GitHub-Event", "push")
        .header("X-GitHub-Delivery", delivery)
        .header(
            "X-Hub-Signature-256",
            sign(SECRET.as_bytes(), body.as_bytes(), "sha256="),
        )
        .body(Body::from(body.to_string()))
        .unwrap()
}

fn plain(n: u64) -> Request<Body> {
    Request::post("/hooks/plain")
        .header("Content-Type", "application/json")
        .header("X-Delivery", format!("d-{n}"))
        .body(Body::from(json!({"n": n}).to_string()))
        .unwrap()
}

async fn waiting_payloads(s: &TestServer, queue: &str) -> Vec<Value> {
    let queue = s.state.queue(queue).unwrap();
    queue
        .jobs(JobState::Waiting, 0, 1000)
        .await
        .unwrap()
        .into_iter()
        .map(|j| serde_json::from_slice(&j.payload).unwrap())
        .collect()
}

#[tokio::test]
async fn a_signed_webhook_is_enqueued_in_an_envelope() {
    let s = server(CONFIG).await;
    let reply = s
        .send(github(r#"{"ref":"refs/heads/main"}"#, "abc-1"))
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text);
    assert_eq!(reply.json["spooled"], false);
    assert!(reply.json["id"].as_u64().is_some());

    let jobs = waiting_payloads(&s, "hooks.github").await;
    assert_eq!(jobs.len(), 1);
    let envelope = &jobs[0];
    assert_eq!(envelope["source"], "github");
    assert_eq!(envelope["delivery"], "abc-1");
    assert_eq!(envelope["headers"]["x-github-event"], "push");
    assert!(
        envelope["headers"].get("x-hub-signature-256").is_none(),
        "the signature is not passed on"
    );
    assert_eq!(envelope["body"], json!({"ref": "refs/heads/main"}));
}

#[tokio::test]
async fn unsigned_badly_signed_and_unknown_webhooks_are_refused() {
    let s = server(CONFIG).await;
    let unsigned = Request::post("/hooks/github")
        .header("Content-Type", "application/json")
        .body(Body::from("{}"))
        .unwrap();
    let reply = s.send(unsigned).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(error_code(&reply), "unauthorized");

    let mut forged = github("{}", "x");
    forged.headers_mut().insert(
        "X-Hub-Signature-256",
        sign(b"another secret", b"{}", "sha256=").parse().unwrap(),
    );
    assert_eq!(s.send(forged).await.status, StatusCode::UNAUTHORIZED);

    // Signed for a different body.
    let mut tampered = github("{}", "y");
    *tampered.body_mut() = Body::from("{\"evil\":true}");
    assert_eq!(s.send(tampered).await.status, StatusCode::UNAUTHORIZED);

    let unknown = Request::post("/hooks/gitlab")
        .body(Body::from("{}"))
        .unwrap();
    let reply = s.send(unknown).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(error_code(&reply), "not_found");

    let big = Request::post("/hooks/plain")
        .body(Body::from("x".repeat(4096)))
        .unwrap();
    assert_eq!(s.send(big).await.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(waiting_payloads(&s, "hooks.github").await.is_empty());
}

#[tokio::test]
async fn a_redelivery_is_answered_but_not_enqueued_twice() {
    let s = server(CONFIG).await;
    let first = s.send(github("{\"n\":1}", "same-delivery")).await;
    let second = s.send(github("{\"n\":1}", "same-delivery")).await;
    assert_eq!(second.status, StatusCode::ACCEPTED);
    assert_eq!(second.json["duplicate"], true);
    assert_eq!(second.json["id"], first.json["id"]);
    assert_eq!(waiting_payloads(&s, "hooks.github").await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_accepted_while_redis_is_down_are_enqueued_in_order_when_it_returns() {
    // Redis persists every write: what it acknowledged survives its crash.
    let redis_server = RedisServer::builder()
        .appendonly()
        .config("appendfsync", "always")
        .start();
    let mut s = server_on(redis_server, CONFIG).await;
    let stop = CancellationToken::new();
    let replayer = plimsoll::service::spawn(
        plimsoll_server::intake::replay::Replayer::new(s.state.clone()),
        stop.clone(),
    );

    assert_eq!(s.send(plain(0)).await.json["spooled"], false);
    s.redis_server.kill();
    for n in 1..=50 {
        let reply = s.send(plain(n)).await;
        assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text);
        assert_eq!(reply.json["spooled"], true);
    }
    assert_eq!(s.state.spool().stats().records, 50);
    // A redelivery while down is spooled too, and dropped at replay.
    assert_eq!(s.send(plain(7)).await.status, StatusCode::ACCEPTED);

    s.redis_server.restart();
    eventually(Duration::from_secs(20), "the spool to drain", || async {
        s.state.spool().is_empty()
    })
    .await;
    // Accepted after Redis came back: behind the spooled ones.
    assert_eq!(s.send(plain(51)).await.status, StatusCode::ACCEPTED);

    let order: Vec<u64> = waiting_payloads(&s, "hooks.plain")
        .await
        .iter()
        .map(|e| e["body"]["n"].as_u64().unwrap())
        .collect();
    assert_eq!(
        order,
        (0..=51).collect::<Vec<_>>(),
        "every accepted webhook, once, in order"
    );
    stop.cancel();
    replayer.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_redis_sends_webhooks_to_the_spool_not_to_the_floor() {
    let redis_server = RedisServer::builder().maxmemory(3 << 20).start();
    let s = server_on(redis_server, CONFIG).await;
    // Fill Redis with something else until writes are refused.
    let mut i = 0;
    while s
        .redis_server
        .command(&["SET", &format!("filler:{i}"), &"x".repeat(10_000)])
        .is_ok()
    {
        i += 1;
    }
    let reply = s.send(plain(1)).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text);
    assert_eq!(reply.json["spooled"], true);

    // Make room; the replayer moves it into the queue.
    s.redis_server.cmd(&["FLUSHALL"]);
    let stop = CancellationToken::new();
    let replayer = plimsoll::service::spawn(
        plimsoll_server::intake::replay::Replayer::new(s.state.clone()),
        stop.clone(),
    );
    eventually(Duration::from_secs(20), "the replay", || async {
        s.state.spool().is_empty()
    })
    .await;
    assert_eq!(waiting_payloads(&s, "hooks.plain").await.len(), 1);
    stop.cancel();
    replayer.await.unwrap();
}

#[tokio::test]
async fn past_the_spool_bound_webhooks_get_503_so_the_sender_retries() {
    let mut s = server(&format!("{CONFIG}\n[spool]\nmax_bytes = \"1MiB\"\n")).await;
    s.redis_server.kill();
    let body = json!({"pad": "y".repeat(1800)}).to_string();
    let mut accepted = 0;
    let refused = loop {
        let request = Request::post("/hooks/plain")
            .header("Content-Type", "application/json")
            .body(Body::from(body.clone()))
            .unwrap();
        let reply = s.send(request).await;
        if reply.status != StatusCode::ACCEPTED {
            break reply;
        }
        accepted += 1;
        assert!(accepted < 10_000, "the spool never filled");
    };
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(error_code(&refused), "spool_full");
    assert!(refused.headers.contains_key("retry-after"));
    assert_eq!(
        s.state.spool().stats().records,
        accepted,
        "every 202 is on disk, nothing more"
    );
}

/// Minted identities were kept for the queue's whole idempotency window (24 h
/// by default): 1,000 webhooks a second without a delivery id kept about
/// 14 GB of keys. They only have to outlive the server's own second tries.
#[tokio::test]
async fn identities_minted_for_webhooks_without_a_delivery_id_expire_within_ten_minutes() {
    let s = server(
        r#"
[hooks.anon]
delivery_header = ""

[hooks.plain]
delivery_header = "X-Delivery"
"#,
    )
    .await;
    let redis = redis::Client::open(s.redis_server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let ttls = |pattern: &'static str| {
        let mut redis = redis.clone();
        async move {
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(pattern)
                .query_async(&mut redis)
                .await
                .unwrap();
            let mut ttls = Vec::new();
            for key in keys {
                let ttl: i64 = redis::cmd("PTTL")
                    .arg(&key)
                    .query_async(&mut redis)
                    .await
                    .unwrap();
                ttls.push(ttl);
            }
            ttls
        }
    };
    for n in 0..3 {
        let anon = Request::post("/hooks/anon")
            .header("Content-Type", "application/json")
            .body(Body::from(json!({"n": n}).to_string()))
            .unwrap();
        assert_eq!(s.send(anon).await.status, StatusCode::ACCEPTED);
        assert_eq!(s.send(plain(n)).await.status, StatusCode::ACCEPTED);
    }
    let minted = ttls("plimsoll:{hooks.anon}:idem:*").await;
    assert_eq!(minted.len(), 3, "one identity per webhook");
    let limit = plimsoll_server::intake::MINTED_IDENTITY_WINDOW.as_millis() as i64;
    assert!(
        minted.iter().all(|&ttl| ttl > 0 && ttl <= limit),
        "{minted:?}"
    );
    let delivered = ttls("plimsoll:{hooks.plain}:idem:*").await;
    assert_eq!(delivered.len(), 3);
    assert!(
        delivered.iter().all(|&ttl| ttl > limit),
        "delivery ids keep the queue's window: {delivered:?}"
    );
}
