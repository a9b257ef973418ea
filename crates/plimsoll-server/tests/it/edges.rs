//! The server's edges, made for real: stalled clients on a real listener,
//! slow bodies, a full connection table, invented methods and paths against
//! `/metrics`, cross-origin requests with the dashboard's cookie, numbers
//! no page can show, and a Redis that would evict what it was given.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use plimsoll::{JobState, NewJob};
use plimsoll_server::listener::{self, ConnectionMetrics, Limits};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::support::{RedisServer, TOKEN, TestServer, error_code, server, server_on};

const HOOKS: &str = r#"
[hooks.plain]
delivery_header = "X-Delivery"
max_body = "2KiB"

[hooks.big]
delivery_header = "X-Delivery"
max_body = "32MiB"

# A hook's body must fit its queue's payload limit, envelope included.
[queues."hooks.big"]
payload_limit = "64MiB"
"#;

/// Stalled connections made by the fault test (the issue's figure: 300
/// against a server at 256 open files). `PLIMSOLL_STALLED_CLIENTS` for more.
fn stalled_clients() -> usize {
    std::env::var("PLIMSOLL_STALLED_CLIENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300)
}

/// The router of `s` behind the real accept loop, on a free port.
struct Served {
    addr: SocketAddr,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    metrics: ConnectionMetrics,
}

async fn listen(s: &TestServer, limits: Limits) -> Served {
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let stop = CancellationToken::new();
    let metrics = ConnectionMetrics::default();
    let task = tokio::spawn(listener::serve(
        tcp,
        s.router.clone(),
        limits,
        metrics.clone(),
        stop.clone(),
    ));
    Served {
        addr,
        stop,
        task,
        metrics,
    }
}

/// Half a request line, then nothing.
async fn stall(addr: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(b"POST /hooks/pl").await.unwrap();
    stream
}

/// Whether the server closed `stream` within `within` (EOF or reset).
async fn closed_within(mut stream: TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 512];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            // A 503 from a shed or refused connection; the close follows.
            Ok(Ok(_)) => continue,
        }
    }
}

/// One webhook on a fresh connection: status and time to answer.
async fn webhook(addr: SocketAddr, source: &str, delivery: &str) -> (u16, Duration) {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let started = Instant::now();
    let response = client
        .post(format!("http://{addr}/hooks/{source}"))
        .header("Content-Type", "application/json")
        .header("X-Delivery", delivery)
        .body(json!({"delivery": delivery}).to_string())
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), started.elapsed())
}

async fn waiting(s: &TestServer, queue: &str) -> u64 {
    s.state
        .queue(queue)
        .unwrap()
        .counts()
        .await
        .unwrap()
        .waiting
}

/// 300 connections sending headers slowly kept all four real webhooks from
/// being answered (server at 256 open files), and no stalled connection was
/// ever closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_clients_never_keep_real_webhooks_from_being_answered() {
    let s = server(HOOKS).await;
    let header_timeout = Duration::from_secs(1);
    let served = listen(
        &s,
        Limits {
            header_read_timeout: header_timeout,
            max_connections: 64,
        },
    )
    .await;
    let n = stalled_clients();
    let mut stalled = Vec::with_capacity(n);
    for _ in 0..n {
        stalled.push(stall(served.addr).await);
    }
    let stalled_at = Instant::now();

    let mut answered = Vec::new();
    for i in 0..4 {
        let (status, took) = webhook(served.addr, "plain", &format!("real-{i}")).await;
        assert_eq!(status, 202, "webhook {i}");
        answered.push(took);
    }
    let slowest = answered.iter().max().unwrap();
    assert!(
        *slowest < Duration::from_secs(2),
        "real webhooks waited behind stalled clients: {answered:?}"
    );
    // Truth from Redis: the four are there, once each.
    assert_eq!(waiting(&s, "hooks.plain").await, 4);

    // Every stalled connection is closed: shed to make room, or by the
    // header timeout.
    let closes: Vec<_> = stalled
        .into_iter()
        .map(|c| tokio::spawn(closed_within(c, header_timeout + Duration::from_secs(3))))
        .collect();
    let mut closed = 0;
    for close in closes {
        closed += usize::from(close.await.unwrap());
    }
    let all_closed_after = stalled_at.elapsed();
    assert_eq!(closed, n, "stalled connections left open");
    let shed = served.metrics.shed.get();
    eprintln!(
        "stalled-client fault: {n} stalled connections against a limit of 64 and a \
         {header_timeout:?} header timeout; 4 of 4 webhooks answered 202 (slowest {slowest:?}), \
         4 in Redis; {closed} of {n} stalled closed within {all_closed_after:?} ({shed} shed)"
    );
    served.stop.cancel();
    tokio::time::timeout(Duration::from_secs(5), served.task)
        .await
        .expect("the listener stops")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed_after_the_header_timeout() {
    let s = server(HOOKS).await;
    let served = listen(
        &s,
        Limits {
            header_read_timeout: Duration::from_millis(500),
            max_connections: 16,
        },
    )
    .await;
    let mut stream = TcpStream::connect(served.addr).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = stream.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{:?}", &buf[..n]);
    let idle = Instant::now();
    assert!(closed_within(stream, Duration::from_secs(3)).await);
    assert!(
        idle.elapsed() >= Duration::from_millis(400),
        "{:?}",
        idle.elapsed()
    );
}

/// A body dripped a byte at a time held its connection for as long as the
/// client liked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_dripped_slowly_is_cut_off_at_its_deadline() {
    let s = server(&format!("[http]\nbody_read_timeout = \"1s\"\n{HOOKS}")).await;
    let served = listen(
        &s,
        Limits {
            header_read_timeout: Duration::from_secs(5),
            max_connections: 16,
        },
    )
    .await;
    let mut stream = TcpStream::connect(served.addr).await.unwrap();
    stream
        .write_all(
            b"POST /hooks/plain HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
              X-Delivery: slow\r\nContent-Length: 40\r\n\r\n{\"a\":",
        )
        .await
        .unwrap();
    let started = Instant::now();
    let mut reply = Vec::new();
    let mut buf = [0u8; 1024];
    // A byte every 200 ms: each gap is short, the whole is not.
    loop {
        tokio::select! {
            read = stream.read(&mut buf) => {
                let n = read.unwrap_or(0);
                reply.extend_from_slice(&buf[..n]);
                if n == 0 || reply.windows(4).any(|w| w == b"\r\n\r\n") { break; }
            }
            () = tokio::time::sleep(Duration::from_millis(200)) => {
                let _ = stream.write_all(b" ").await;
            }
        }
        assert!(started.elapsed() < Duration::from_secs(5), "no answer");
    }
    let text = String::from_utf8_lossy(&reply);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(waiting(&s, "hooks.plain").await, 0, "nothing was enqueued");
}

/// When every connection has a request in flight, a newcomer is answered
/// 503 after a short wait; the requests in flight are never cut off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_server_answers_503_and_never_cuts_off_requests_in_flight() {
    let s = server(HOOKS).await;
    let served = listen(
        &s,
        Limits {
            header_read_timeout: Duration::from_secs(5),
            max_connections: 16,
        },
    )
    .await;
    let body = json!({"n": 1}).to_string();
    let mut busy = Vec::new();
    for i in 0..16 {
        let mut stream = TcpStream::connect(served.addr).await.unwrap();
        let head = format!(
            "POST /hooks/plain HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
             X-Delivery: busy-{i}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{}",
            body.len(),
            &body[..2]
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        busy.push(stream);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let mut newcomer = TcpStream::connect(served.addr).await.unwrap();
    newcomer
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), newcomer.read_to_end(&mut reply)).await;
    let text = String::from_utf8_lossy(&reply);
    assert!(text.starts_with("HTTP/1.1 503"), "{text}");
    assert!(text.contains("too_many_connections"), "{text}");
    assert!(
        started.elapsed() >= listener::FULL_WAIT,
        "{:?}",
        started.elapsed()
    );
    assert_eq!(served.metrics.refused.get(), 1);
    assert_eq!(served.metrics.shed.get(), 0, "no busy connection was shed");
    // The 16 finish their bodies and are all kept.
    let mut answers = Vec::new();
    for mut stream in busy {
        stream.write_all(&body.as_bytes()[2..]).await.unwrap();
        answers.push(tokio::spawn(async move {
            let mut reply = Vec::new();
            stream.read_to_end(&mut reply).await.unwrap();
            String::from_utf8_lossy(&reply).into_owned()
        }));
    }
    for answer in answers {
        let text = answer.await.unwrap();
        assert!(text.starts_with("HTTP/1.1 202"), "{text}");
    }
    assert_eq!(waiting(&s, "hooks.plain").await, 16);
}

/// Graceful shutdown with the accept loop: connections waiting for a head
/// are closed at once, a request in flight finishes, new connections are
/// refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_stalled_connections_and_lets_requests_in_flight_finish() {
    let s = server(HOOKS).await;
    let served = listen(
        &s,
        Limits {
            header_read_timeout: Duration::from_secs(30),
            max_connections: 16,
        },
    )
    .await;
    let stalled = stall(served.addr).await;
    let body = json!({"n": 1}).to_string();
    let mut in_flight = TcpStream::connect(served.addr).await.unwrap();
    in_flight
        .write_all(
            format!(
                "POST /hooks/plain HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
                 X-Delivery: last\r\nContent-Length: {}\r\n\r\n{}",
                body.len(),
                &body[..3]
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    served.stop.cancel();
    assert!(closed_within(stalled, Duration::from_secs(2)).await);
    assert!(
        TcpStream::connect(served.addr).await.is_err(),
        "new connections are refused once stopping"
    );
    in_flight.write_all(&body.as_bytes()[3..]).await.unwrap();
    let mut reply = vec![0u8; 1024];
    let n = in_flight.read(&mut reply).await.unwrap();
    let text = String::from_utf8_lossy(&reply[..n]);
    assert!(text.starts_with("HTTP/1.1 202"), "{text}");
    tokio::time::timeout(Duration::from_secs(5), served.task)
        .await
        .expect("the listener stops once the last request is done")
        .unwrap();
    assert_eq!(waiting(&s, "hooks.plain").await, 1);
}

/// A 100 GiB `max_body` on one source let every source's senders make the
/// server buffer that much: each source now reads only up to its own cap,
/// and a declared length over it is refused before the body is read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_body_is_read_only_up_to_its_own_sources_cap() {
    let s = server(HOOKS).await;
    let served = listen(
        &s,
        Limits {
            header_read_timeout: Duration::from_secs(5),
            max_connections: 16,
        },
    )
    .await;
    // A declared 50 MB body, none of it sent: 413 at once.
    let mut stream = TcpStream::connect(served.addr).await.unwrap();
    stream
        .write_all(
            b"POST /hooks/plain HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 50000000\r\n\r\n",
        )
        .await
        .unwrap();
    let mut reply = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut reply))
        .await
        .expect("answered before the body")
        .unwrap();
    let text = String::from_utf8_lossy(&reply[..n]);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");

    // A chunked body with no length: cut off at the cap (2 KiB), not at the
    // 32 MiB of the other source.
    let stream = TcpStream::connect(served.addr).await.unwrap();
    let (mut read_half, mut write_half) = stream.into_split();
    write_half
        .write_all(
            b"POST /hooks/plain HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n",
        )
        .await
        .unwrap();
    // 1 KiB every 5 ms, reading all the while: the answer comes after the
    // cap, long before the 256 KiB this would send in all. (The old route
    // read up to the largest source's cap, 32 MiB here, before answering.)
    let chunk = format!("400\r\n{}\r\n", "x".repeat(1024));
    let mut sent = 0usize;
    let mut reply = Vec::new();
    let mut buf = [0u8; 1024];
    let mut pace = tokio::time::interval(Duration::from_millis(5));
    while sent < 256 << 10 {
        tokio::select! {
            read = read_half.read(&mut buf) => {
                let n = read.unwrap_or(0);
                reply.extend_from_slice(&buf[..n]);
                if n == 0 || reply.windows(4).any(|w| w == b"\r\n\r\n") { break; }
            }
            _ = pace.tick() => {
                if write_half.write_all(chunk.as_bytes()).await.is_err() { break; }
                sent += 1024;
            }
        }
    }
    let text = String::from_utf8_lossy(&reply);
    assert!(
        text.starts_with("HTTP/1.1 413"),
        "sent {sent} bytes: {text}"
    );
    assert!(
        sent < 64 << 10,
        "the server read {sent} bytes for a 2 KiB cap"
    );
    eprintln!("body cap: a chunked body to a 2 KiB source was answered 413 after {sent} bytes");
    assert_eq!(waiting(&s, "hooks.plain").await, 0);

    // The big source still takes a body over the small one's cap.
    let big = json!({"blob": "y".repeat(100_000)}).to_string();
    let request = Request::post("/hooks/big")
        .header("Content-Type", "application/json")
        .body(Body::from(big))
        .unwrap();
    assert_eq!(s.send(request).await.status, StatusCode::ACCEPTED);
}

/// Each request with an invented HTTP method added a series to `/metrics`
/// (45,000 unauthenticated requests made 45,000 series).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invented_methods_paths_and_sources_add_no_series_to_metrics() {
    use rand::{Rng, RngExt};

    let s = server(HOOKS).await;
    let mut rng = rand::rng();
    let token = |rng: &mut rand::rngs::ThreadRng, len: usize| -> String {
        (0..len)
            .map(|_| rng.random_range(b'A'..=b'Z') as char)
            .collect()
    };
    for i in 0..2000 {
        let method = match i % 4 {
            0 => token(&mut rng, 8),
            1 => "GET".into(),
            2 => "POST".into(),
            _ => "PROPFIND".into(),
        };
        let path = match i % 5 {
            0 => format!("/{}", token(&mut rng, 12)),
            1 => format!("/hooks/{}", token(&mut rng, 10)),
            2 => format!("/v1/queues/{}/jobs/{}", token(&mut rng, 6), rng.next_u32()),
            3 => format!("/v1/{}", token(&mut rng, 6)),
            _ => "/healthz".to_string(),
        };
        let request = Request::builder()
            .method(method.as_str())
            .uri(path.as_str())
            .body(Body::empty())
            .unwrap();
        let reply = s.send(request).await;
        assert!(
            reply.status.as_u16() < 500,
            "{method} {path}: {}",
            reply.status
        );
    }
    let text = plimsoll_server::metrics_text(&s.state);
    let series: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("plimsoll_http_requests_total{"))
        .collect();
    let mut methods = std::collections::BTreeSet::new();
    let mut routes = std::collections::BTreeSet::new();
    for line in &series {
        let label = |name: &str| {
            let start = line.find(&format!("{name}=\"")).unwrap() + name.len() + 2;
            line[start..][..line[start..].find('"').unwrap()].to_string()
        };
        methods.insert(label("method"));
        routes.insert(label("route"));
    }
    let fixed = [
        "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "other",
    ];
    assert!(
        methods.iter().all(|m| fixed.contains(&m.as_str())),
        "{methods:?}"
    );
    assert!(
        routes
            .iter()
            .all(|r| r == "(unmatched)" || r.starts_with("/")),
        "{routes:?}"
    );
    assert!(routes.len() <= 6, "{routes:?}");
    assert!(series.len() <= 40, "{} series: {series:#?}", series.len());
    eprintln!(
        "metrics: 2000 requests with invented methods, paths and sources: {} http series, \
         methods {methods:?}, routes {routes:?}",
        series.len()
    );
    // Webhooks for sources nobody configured are not counted by source.
    assert!(
        !text.contains("plimsoll_intake_webhooks_total{source="),
        "{text}"
    );

    // Queue labels are capped: beyond 200 queues the rest are summed.
    s.state.metrics().update(|snap| {
        for i in 0..500 {
            snap.queues.insert(
                format!("q{i:03}"),
                plimsoll::queue::QueueCounts {
                    waiting: 1,
                    ..Default::default()
                },
            );
        }
    });
    let text = plimsoll_server::metrics_text(&s.state);
    let waiting: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("plimsoll_queue_jobs{") && l.contains("state=\"waiting\""))
        .collect();
    assert_eq!(
        waiting.len(),
        plimsoll_server::metrics::MAX_LABELLED_QUEUES + 1
    );
    assert!(
        waiting.contains(&"plimsoll_queue_jobs{queue=\"(other)\",state=\"waiting\"} 300"),
        "{waiting:?}"
    );
}

fn cookie_request(
    method: &str,
    uri: &str,
    origin: Option<&str>,
    referer: Option<&str>,
) -> Request<Body> {
    let mut builder = Request::builder()
        .method(method)
        .uri(uri)
        .header("Host", "127.0.0.1:8080")
        .header("Cookie", format!("plimsoll_token={TOKEN}"))
        .header("Content-Type", "application/x-www-form-urlencoded");
    if let Some(origin) = origin {
        builder = builder.header("Origin", origin);
    }
    if let Some(referer) = referer {
        builder = builder.header("Referer", referer);
    }
    builder.body(Body::from("a=b")).unwrap()
}

async fn paused(s: &TestServer, queue: &str) -> bool {
    s.state.queue(queue).unwrap().counts().await.unwrap().paused
}

/// With the dashboard's cookie, `pause`, `resume` and `retry` worked from
/// any origin with a form content type.
#[tokio::test]
async fn a_cross_origin_form_post_with_the_cookie_changes_nothing() {
    let s = server("").await;
    let queue = s.state.queue("mail").unwrap();
    let dead = queue
        .enqueue(NewJob::bytes("x").max_attempts(1))
        .await
        .unwrap()
        .id;
    // Move it to the dead set the way the API sees it: fail it once.
    let worker = plimsoll::Worker::builder(queue.clone())
        .concurrency(1)
        .start(|_job: plimsoll::Job| async { plimsoll::Outcome::fail("no") })
        .unwrap();
    crate::support::eventually(Duration::from_secs(10), "a dead job", || async {
        queue.counts().await.unwrap().dead == 1
    })
    .await;
    worker.shutdown().await.unwrap();

    for (origin, referer) in [
        (Some("http://evil.example"), None),
        (Some("http://127.0.0.1:3000"), None),
        (Some("null"), None),
        (None, Some("http://evil.example/form.html")),
        (None, None),
    ] {
        for uri in [
            "/v1/queues/mail/pause".to_string(),
            format!("/v1/queues/mail/jobs/{dead}/retry"),
            "/v1/queues/mail/dead/purge".to_string(),
        ] {
            let reply = s.send(cookie_request("POST", &uri, origin, referer)).await;
            assert_eq!(
                reply.status,
                StatusCode::FORBIDDEN,
                "{uri} {origin:?} {referer:?}"
            );
            assert_eq!(error_code(&reply), "cross_origin");
        }
        let reply = s
            .send(cookie_request(
                "DELETE",
                &format!("/v1/queues/mail/jobs/{dead}"),
                origin,
                referer,
            ))
            .await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN);
    }
    // Nothing changed in Redis.
    assert!(!paused(&s, "mail").await);
    let job = queue.job(dead).await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Dead);

    // From the dashboard's own pages it works.
    let reply = s
        .send(cookie_request(
            "POST",
            "/v1/queues/mail/pause",
            Some("http://127.0.0.1:8080"),
            None,
        ))
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.text);
    assert!(paused(&s, "mail").await);
    let reply = s
        .send(cookie_request(
            "POST",
            "/v1/queues/mail/resume",
            None,
            Some("http://127.0.0.1:8080/queues/mail"),
        ))
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.text);
    assert!(!paused(&s, "mail").await);
    // Reading with the cookie needs no origin; a bearer token never does.
    let reply = s
        .send(cookie_request("GET", "/v1/queues/mail", None, None))
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    let reply = s
        .call("POST", &format!("/v1/queues/mail/jobs/{dead}/retry"), None)
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(
        queue.job(dead).await.unwrap().unwrap().state,
        JobState::Waiting
    );
}

#[tokio::test]
async fn dashboard_pages_forbid_framing_and_sniffing_and_the_cookie_is_strict() {
    let s = server("[http]\npublic_url = \"https://plimsoll.example.com/\"\n").await;
    for uri in ["/login", "/", "/static/app.js"] {
        let reply = s
            .send(
                Request::get(uri)
                    .header("Cookie", format!("plimsoll_token={TOKEN}"))
                    .body(Body::empty())
                    .unwrap(),
            )
            .await;
        let header = |name: &str| {
            reply
                .headers
                .get(name)
                .unwrap_or_else(|| panic!("{uri}: no {name}"))
                .to_str()
                .unwrap()
                .to_string()
        };
        let csp = header("content-security-policy");
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert!(csp.contains("script-src 'self'"), "{csp}");
        assert_eq!(header("x-frame-options"), "DENY");
        assert_eq!(header("x-content-type-options"), "nosniff");
        assert_eq!(header("referrer-policy"), "same-origin");
    }
    let reply = s
        .send(
            Request::get(format!("/login?token={TOKEN}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    let cookie = reply.headers["set-cookie"].to_str().unwrap();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );

    // The login form refuses a post from another site, takes one from the
    // configured public origin (behind a proxy that rewrites Host).
    let login = |origin: &str| {
        Request::post("/login")
            .header("Host", "10.0.0.5:8080")
            .header("Origin", origin)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(Body::from(format!("token={TOKEN}")))
            .unwrap()
    };
    assert_eq!(
        s.send(login("http://evil.example")).await.status,
        StatusCode::FORBIDDEN
    );
    let reply = s.send(login("https://plimsoll.example.com")).await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.text);
}

/// `delay_ms = 18446744073709551615` was accepted and then crashed every
/// page that listed the job.
#[tokio::test]
async fn huge_numbers_are_refused_or_shown_and_no_page_fails() {
    let s = server("").await;
    for body in [
        json!({"payload": 1, "delay_ms": u64::MAX}),
        json!({"payload": 1, "run_at_ms": u64::MAX}),
        json!({"payload": 1, "delay_ms": 400u64 * 365 * 86_400_000}),
    ] {
        let reply = s
            .call("POST", "/v1/queues/mail/jobs", Some(body.clone()))
            .await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{body}: {}",
            reply.text
        );
        assert!(reply.text.contains("10 years"), "{}", reply.text);
    }
    let reply = s
        .call(
            "POST",
            "/v1/queues/mail/jobs/bulk",
            Some(json!({"jobs": [{"payload": 1}, {"payload": 2, "delay_ms": u64::MAX}]})),
        )
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(reply.text.contains("job 1"), "{}", reply.text);
    assert_eq!(
        s.redis_server
            .keys()
            .iter()
            .filter(|k| k.contains("{mail}:jobs"))
            .count(),
        0
    );

    // A job already in Redis with a due time no calendar can show (written
    // before the bound, or by hand): every page still renders.
    let queue = s.state.queue("mail").unwrap();
    let id = queue
        .enqueue(NewJob::bytes("{}").delay(Duration::from_secs(60)))
        .await
        .unwrap()
        .id;
    s.redis_server.cmd(&[
        "ZADD",
        "plimsoll:{mail}:scheduled",
        "18446744073709551615",
        &id.to_string(),
    ]);
    for uri in [
        "/".to_string(),
        "/queues/mail?state=scheduled".to_string(),
        format!("/queues/mail/jobs/{id}"),
    ] {
        let reply = s
            .send(
                Request::get(uri.as_str())
                    .header("Cookie", format!("plimsoll_token={TOKEN}"))
                    .body(Body::empty())
                    .unwrap(),
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{uri}: {}", reply.text);
        if uri.contains("scheduled") || uri.contains("jobs") {
            assert!(
                reply.text.contains("after the year 9999"),
                "{uri}: {}",
                reply.text
            );
        }
    }
    let reply = s
        .call("GET", "/v1/queues/mail/jobs?state=scheduled", None)
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
}

/// `offset` past the end answered 500.
#[tokio::test]
async fn offsets_past_the_end_are_an_empty_page_and_absurd_ones_a_400() {
    let s = server("").await;
    s.call("POST", "/v1/queues/mail/jobs", Some(json!({"payload": 1})))
        .await;
    for state in ["waiting", "scheduled", "active", "completed", "dead"] {
        let reply = s
            .call(
                "GET",
                &format!("/v1/queues/mail/jobs?state={state}&offset=1000"),
                None,
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{state}: {}", reply.text);
        assert_eq!(reply.json, json!([]));
        for offset in ["18446744073709551615", "9223372036854775808", "100000001"] {
            let reply = s
                .call(
                    "GET",
                    &format!("/v1/queues/mail/jobs?state={state}&offset={offset}"),
                    None,
                )
                .await;
            assert_eq!(
                reply.status,
                StatusCode::BAD_REQUEST,
                "{state} {offset}: {}",
                reply.text
            );
            assert_eq!(error_code(&reply), "invalid_input");
            let page = s
                .send(
                    Request::get(format!("/queues/mail?state={state}&offset={offset}"))
                        .header("Cookie", format!("plimsoll_token={TOKEN}"))
                        .body(Body::empty())
                        .unwrap(),
                )
                .await;
            assert_eq!(page.status, StatusCode::BAD_REQUEST, "{state} {offset}");
        }
    }
    let reply = s
        .call(
            "GET",
            "/v1/queues/mail/dead?offset=18446744073709551615",
            None,
        )
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text);
}

#[tokio::test]
async fn queue_names_of_dots_are_refused_and_the_bearer_scheme_is_case_insensitive() {
    let s = server("").await;
    for name in ["%2E", "%2E%2E", "..", "...", "%2e%2e"] {
        let reply = s
            .call(
                "POST",
                &format!("/v1/queues/{name}/jobs"),
                Some(json!({"payload": 1})),
            )
            .await;
        assert!(
            reply.status == StatusCode::BAD_REQUEST || reply.status == StatusCode::NOT_FOUND,
            "{name}: {} {}",
            reply.status,
            reply.text
        );
    }
    assert!(
        !s.redis_server.keys().iter().any(|k| k.contains("{.")),
        "{:?}",
        s.redis_server.keys()
    );
    let reply = s
        .call(
            "POST",
            "/v1/queues/%2E%2E/jobs",
            Some(json!({"payload": 1})),
        )
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text);
    assert!(reply.text.contains("dots"), "{}", reply.text);

    for scheme in ["bearer", "BEARER", "Bearer", "bEaReR"] {
        let reply = s
            .send(
                Request::get("/v1/queues")
                    .header("Authorization", format!("{scheme} {TOKEN}"))
                    .body(Body::empty())
                    .unwrap(),
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{scheme}: {}", reply.text);
    }
}

/// Job records and idempotency keys vanished silently on a Redis that
/// evicts: the server now refuses such a Redis at start, and the API never
/// acknowledges a job or a webhook there.
#[tokio::test]
async fn an_evicting_redis_is_refused_and_nothing_is_acknowledged_on_it() {
    let s = server_on(
        RedisServer::builder()
            .maxmemory_policy("allkeys-lru")
            .start(),
        HOOKS,
    )
    .await;
    let err = plimsoll_server::check_redis(s.state.config(), s.state.redis())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("allkeys-lru"), "{err}");
    let reply = s
        .call("POST", "/v1/queues/mail/jobs", Some(json!({"payload": 1})))
        .await;
    assert_eq!(
        reply.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        reply.text
    );
    assert_eq!(error_code(&reply), "redis_evicts");
    let request = Request::post("/hooks/plain")
        .header("X-Delivery", "d-1")
        .body(Body::from("{}"))
        .unwrap();
    let reply = s.send(request).await;
    assert_eq!(
        reply.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        reply.text
    );
    assert_eq!(
        s.redis_server.dbsize(),
        0,
        "nothing acknowledged, nothing written"
    );

    // Accepted explicitly, it runs (and says so in the log).
    let s = server_on(
        RedisServer::builder()
            .maxmemory_policy("volatile-lru")
            .start(),
        &format!("[redis]\nallow_eviction = true\n{HOOKS}"),
    )
    .await;
    plimsoll_server::check_redis(s.state.config(), s.state.redis())
        .await
        .unwrap();
    let reply = s
        .call("POST", "/v1/queues/mail/jobs", Some(json!({"payload": 1})))
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
}

#[tokio::test]
async fn readyz_says_when_webhooks_rest_on_a_redis_that_does_not_fsync_every_write() {
    let s = server(HOOKS).await;
    let warnings = plimsoll_server::check_redis(s.state.config(), s.state.redis())
        .await
        .unwrap();
    s.state.set_redis_warnings(warnings);
    let reply = s.call("GET", "/readyz", None).await;
    assert_eq!(reply.status, StatusCode::OK);
    let degraded = reply.json["degraded"].to_string();
    assert!(degraded.contains("appendonly no"), "{degraded}");

    let durable = server_on(
        RedisServer::builder()
            .appendonly()
            .config("appendfsync", "always")
            .start(),
        HOOKS,
    )
    .await;
    let warnings = plimsoll_server::check_redis(durable.state.config(), durable.state.redis())
        .await
        .unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
}
