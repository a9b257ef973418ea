//! The dashboard in a real headless Chromium, driven through chromedriver
//! (WebDriver): the pages render, the memory chart is drawn, and a dead job
//! can be retried from the page.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use plimsoll::{JobState, NewJob, Outcome, Worker};
use serde_json::json;

use crate::support::{RedisServer, TOKEN, TestServer, eventually, server_adjusted};

/// chromedriver on a free port, killed on drop.
struct Driver {
    child: Child,
    port: u16,
    _profile: tempfile::TempDir,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn chromedriver() -> Driver {
    let port = free_port();
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver is installed (package chromium-driver; ./scripts/test installs it)");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "chromedriver did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Driver {
        child,
        port,
        _profile: tempfile::tempdir().unwrap(),
    }
}

async fn browser(driver: &Driver) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": "/usr/bin/chromium",
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-quic", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync",
                format!("--user-data-dir={}", driver._profile.path().display()),
            ]
        }),
    );
    // chromedriver is on loopback: plain HTTP, no TLS stack needed.
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .expect("a Chromium session")
}

/// Serves the router on a free port; returns its base URL.
async fn listen(s: &TestServer) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = s.router.clone();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_renders_and_a_dead_job_is_retried_from_the_page() {
    // The guard's clock is ours, so half an hour of readings takes a moment.
    let clock = plimsoll::ManualClock::starting_now();
    let guard_clock = clock.clone();
    let s = server_adjusted(
        RedisServer::builder().maxmemory(64 << 20).start(),
        "",
        move |config| {
            if let Some(guard) = config.guard.as_mut() {
                guard.clock = std::sync::Arc::new(guard_clock);
            }
        },
    )
    .await;
    let base = listen(&s).await;
    let queue = s.state.queue("billing").unwrap();
    let dead = queue
        .enqueue(NewJob::bytes("{\"invoice\":42}").max_attempts(1))
        .await
        .unwrap()
        .id;
    queue
        .enqueue(NewJob::bytes("{\"invoice\":43}"))
        .await
        .unwrap();
    let worker = Worker::builder(queue.clone())
        .concurrency(1)
        .prefetch(0)
        .start(|job: plimsoll::Job| async move {
            if job.payload_str().unwrap_or("").contains("42") {
                Outcome::fail("card declined")
            } else {
                // Keep the other job waiting: pause after the first.
                Outcome::retry_after(Duration::from_secs(3600), "later")
            }
        })
        .unwrap();
    eventually(Duration::from_secs(10), "a dead job", || async {
        queue.counts().await.unwrap().dead == 1
    })
    .await;
    worker.shutdown().await.unwrap();
    // Redis grows steadily for half an hour of the guard's clock: the
    // chart gets a forecast line, the memory report a growing family.
    let guard = s.state.guard().expect("the guard runs by default");
    for minute in 0..30 {
        for i in 0..20 {
            s.redis_server
                .cmd(&["SET", &format!("session:{minute}:{i}"), &"x".repeat(2000)]);
        }
        guard.sample_once().await.unwrap();
        clock.advance(Duration::from_secs(60));
    }
    guard.attribute_once().await.unwrap();
    assert!(
        guard.stats().total_forecast.is_some(),
        "a forecast from the readings"
    );

    let driver = chromedriver();
    let client = browser(&driver).await;

    // Without the cookie, the dashboard sends you to the login page.
    client.goto(&format!("{base}/")).await.unwrap();
    assert!(
        client
            .current_url()
            .await
            .unwrap()
            .path()
            .ends_with("/login")
    );
    // The printed link logs in.
    client
        .goto(&format!("{base}/login?token={TOKEN}"))
        .await
        .unwrap();
    assert_eq!(client.current_url().await.unwrap().path(), "/");

    let row = client
        .find(Locator::Css("#queues tr[data-queue='billing']"))
        .await
        .expect("the queue is listed");
    let text = row.text().await.unwrap();
    assert!(text.contains("billing"), "{text}");
    let chart = client
        .find(Locator::Css("svg#memory-chart"))
        .await
        .expect("the memory chart");
    assert!(
        chart.find(Locator::Css("path.used")).await.is_ok(),
        "the used-memory line is drawn"
    );

    // The dead job, and its Retry button.
    client
        .goto(&format!("{base}/queues/billing?state=dead"))
        .await
        .unwrap();
    let row = client
        .find(Locator::Css(&format!("#jobs tr[data-job='{dead}']")))
        .await
        .expect("the dead job is listed");
    assert!(row.text().await.unwrap().contains("card declined"));
    let retry = row
        .find(Locator::Css("button[data-action*='/retry']"))
        .await
        .unwrap();
    retry.click().await.unwrap();
    eventually(
        Duration::from_secs(10),
        "the retried job to wait again",
        || async {
            queue
                .job(dead)
                .await
                .unwrap()
                .is_some_and(|j| j.state == JobState::Waiting)
        },
    )
    .await;
    let job = queue.job(dead).await.unwrap().unwrap();
    assert_eq!(job.attempts, 0, "a fresh set of attempts");

    // The job page shows the payload.
    client
        .goto(&format!("{base}/queues/billing/jobs/{dead}"))
        .await
        .unwrap();
    let pre = client
        .find(Locator::Css("pre"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(pre.contains("\"invoice\": 42"), "{pre}");
    client.close().await.unwrap();
}
