//! The webhook sink: posts alerts to a generic JSON webhook or a
//! Slack-compatible incoming webhook. Built with the `webhook-sink` feature.
//!
//! The webhooks use reqwest with rustls: a maintained, widely used client
//! with timeouts and TLS built in, and no OpenSSL to install on the machine
//! that runs the guard. Each delivery has a timeout and is tried up to
//! [`WEBHOOK_ATTEMPTS`] times; a failure is counted, logged and does not
//! stop the guard.

use std::fmt;
use std::time::Duration;

use futures::future::BoxFuture;

use super::{AlertSink, WebhookFormat, payload};
use crate::error::{Error, ErrorKind, Result};
use crate::guard::alerts::Alert;

/// Time one webhook delivery may take.
pub const DEFAULT_WEBHOOK_TIMEOUT: Duration = Duration::from_secs(5);
/// Deliveries tried per alert and webhook.
pub const WEBHOOK_ATTEMPTS: u32 = 3;

/// Posts alerts to a URL.
#[derive(Clone)]
pub struct WebhookSink {
    name: String,
    url: reqwest::Url,
    format: WebhookFormat,
    client: reqwest::Client,
}

impl fmt::Debug for WebhookSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URL of an incoming webhook is its secret: show the host only.
        f.debug_struct("WebhookSink")
            .field("host", &self.url.host_str())
            .field("format", &self.format)
            .finish()
    }
}

impl WebhookSink {
    /// A sink posting JSON alerts to `url` (http or https).
    pub fn json(url: &str) -> Result<Self> {
        Self::new(url, WebhookFormat::Json)
    }

    /// A sink posting to a Slack-compatible incoming webhook.
    pub fn slack(url: &str) -> Result<Self> {
        Self::new(url, WebhookFormat::Slack)
    }

    fn new(url: &str, format: WebhookFormat) -> Result<Self> {
        let parsed = reqwest::Url::parse(url)
            .map_err(|e| Error::invalid(format!("webhook URL is not valid: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(Error::invalid(format!(
                "webhook URL scheme {:?} must be http or https",
                parsed.scheme()
            )));
        }
        let client = reqwest::Client::builder()
            .timeout(DEFAULT_WEBHOOK_TIMEOUT)
            .user_agent(concat!("plimsoll-guard/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::invalid(format!("cannot build the HTTP client: {e}")))?;
        let name = match format {
            WebhookFormat::Json => "webhook",
            WebhookFormat::Slack => "slack",
        };
        Ok(Self {
            name: format!("{name}:{}", parsed.host_str().unwrap_or("?")),
            url: parsed,
            format,
            client,
        })
    }

    /// The body posted for `alert`.
    pub fn body(&self, alert: &Alert) -> serde_json::Value {
        payload(self.format, alert)
    }
}

impl AlertSink for WebhookSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn send<'a>(&'a self, alert: &'a Alert) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let body = self.body(alert);
            let mut last = None;
            for attempt in 0..WEBHOOK_ATTEMPTS {
                if attempt > 0 {
                    tokio::time::sleep(Duration::from_millis(250 << attempt)).await;
                }
                match self.client.post(self.url.clone()).json(&body).send().await {
                    Ok(response) if response.status().is_success() => return Ok(()),
                    Ok(response) => {
                        last = Some(format!("HTTP {}", response.status()));
                        // A client error will not get better by itself.
                        if response.status().is_client_error() && response.status() != 429 {
                            break;
                        }
                    }
                    Err(err) => last = Some(err.without_url().to_string()),
                }
            }
            Err(Error::new(
                ErrorKind::Unavailable,
                format!(
                    "{} did not accept the alert: {}",
                    self.name,
                    last.unwrap_or_default()
                ),
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use axum::Router;
    use axum::extract::State;
    use axum::http::StatusCode;
    use axum::routing::post;

    use super::*;
    use crate::guard::alerts::AlertKind;
    use crate::guard::alerts::tests::alert;

    type Received = Arc<Mutex<Vec<serde_json::Value>>>;

    /// A local HTTP receiver that answers `status` and keeps the bodies.
    async fn receiver(status: StatusCode) -> (String, Received) {
        let received: Received = Arc::default();
        let app = Router::new()
            .route(
                "/hook",
                post(
                    move |State(r): State<Received>, body: axum::Json<serde_json::Value>| async move {
                        r.lock().unwrap().push(body.0);
                        status
                    },
                ),
            )
            .with_state(received.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (url, received)
    }

    #[tokio::test]
    async fn the_json_webhook_posts_the_whole_alert() {
        let (url, received) = receiver(StatusCode::OK).await;
        let sink = WebhookSink::json(&url).unwrap();
        sink.send(&alert(AlertKind::LevelRaised { level: 0.5 }, 1))
            .await
            .unwrap();
        let bodies = received.lock().unwrap().clone();
        assert_eq!(bodies.len(), 1);
        let body = &bodies[0];
        assert_eq!(body["kind"]["type"], "level_raised");
        assert_eq!(body["kind"]["level"], 0.5);
        assert_eq!(body["node"], "127.0.0.1:6379");
        assert_eq!(body["limit_source"], "maxmemory");
        assert_eq!(body["top_growing"][0]["pattern"], "bull:mail:completed");
        assert!(body["text"].as_str().unwrap().contains("BullMQ queue mail"));
    }

    #[tokio::test]
    async fn the_slack_webhook_posts_text() {
        let (url, received) = receiver(StatusCode::OK).await;
        let sink = WebhookSink::slack(&url).unwrap();
        sink.send(&alert(AlertKind::OutOfMemory { rejections: 3 }, 1))
            .await
            .unwrap();
        let body = received.lock().unwrap()[0].clone();
        let text = body["text"].as_str().unwrap();
        assert!(text.starts_with(":warning: *test out_of_memory*"), "{text}");
        assert_eq!(body.as_object().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_refusing_receiver_is_an_error_that_names_the_sink() {
        let (url, received) = receiver(StatusCode::BAD_REQUEST).await;
        let sink = WebhookSink::json(&url).unwrap();
        let err = sink
            .send(&alert(AlertKind::Unbounded, 1))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("HTTP 400"), "{err}");
        // 400 is not retried.
        assert_eq!(received.lock().unwrap().len(), 1);
    }

    #[test]
    fn webhook_urls_are_checked() {
        assert!(WebhookSink::json("ftp://x").is_err());
        assert!(WebhookSink::slack("not a url").is_err());
    }
}
