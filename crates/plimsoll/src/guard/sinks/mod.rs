//! Where alerts go: the log, a generic JSON webhook, a Slack-compatible
//! incoming webhook. [`AlertSink`] is public, so an application can add its
//! own (a pager, a channel the dashboard reads).
//!
//! The webhook sink is the one part of the library that needs an HTTP
//! client, so it lives in its own file behind the `webhook-sink` cargo
//! feature (on by default): a cache or queue user who turns default
//! features off builds without reqwest. The webhook bodies ([`payload`])
//! are here either way, for a sink of one's own.

use std::fmt;

use futures::future::BoxFuture;
use serde_json::json;

use super::alerts::{Alert, Severity};
use crate::error::Result;

#[cfg(feature = "webhook-sink")]
mod webhook;

#[cfg(feature = "webhook-sink")]
pub use webhook::{DEFAULT_WEBHOOK_TIMEOUT, WEBHOOK_ATTEMPTS, WebhookSink};

/// Receives alerts.
pub trait AlertSink: Send + Sync + fmt::Debug {
    /// For logs and metrics.
    fn name(&self) -> &str;
    /// Delivers one alert.
    fn send<'a>(&'a self, alert: &'a Alert) -> BoxFuture<'a, Result<()>>;
}

/// Writes alerts to the log (`tracing`): warnings and errors, with the
/// alert's text.
#[derive(Debug, Default, Clone, Copy)]
pub struct LogSink;

impl AlertSink for LogSink {
    fn name(&self) -> &str {
        "log"
    }

    fn send<'a>(&'a self, alert: &'a Alert) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let text = alert.text();
            match alert.severity {
                Severity::Critical => {
                    tracing::error!(alert = alert.kind.name(), node = %alert.node, "{text}")
                }
                Severity::Warning => {
                    tracing::warn!(alert = alert.kind.name(), node = %alert.node, "{text}")
                }
                Severity::Info => {
                    tracing::info!(alert = alert.kind.name(), node = %alert.node, "{text}")
                }
            }
            Ok(())
        })
    }
}

/// Body of a webhook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookFormat {
    /// The alert as JSON (see [`Alert`]'s fields), plus `text`.
    Json,
    /// `{"text": …}`, which Slack, Mattermost, Rocket.Chat and Discord's
    /// `/slack` endpoints accept.
    Slack,
}

/// The body of a webhook in `format`.
pub fn payload(format: WebhookFormat, alert: &Alert) -> serde_json::Value {
    match format {
        WebhookFormat::Json => {
            let mut value = serde_json::to_value(alert).unwrap_or_else(|_| json!({}));
            if let Some(object) = value.as_object_mut() {
                object.insert("text".into(), json!(alert.text()));
                object.insert("source".into(), json!("plimsoll-guard"));
            }
            value
        }
        WebhookFormat::Slack => {
            let icon = match alert.severity {
                Severity::Critical => ":rotating_light:",
                Severity::Warning => ":warning:",
                Severity::Info => ":white_check_mark:",
            };
            let mut lines = alert.text().lines().map(str::to_string).collect::<Vec<_>>();
            if let Some(first) = lines.first_mut() {
                *first = format!("{icon} *{first}*");
            }
            json!({ "text": lines.join("\n") })
        }
    }
}
