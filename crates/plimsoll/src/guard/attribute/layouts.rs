//! The key layouts of the foreign queues the guard names: Celery (and
//! kombu), RQ, apalis and Sidekiq. Each function reads one key and returns
//! its family when the key is one of that library's, else `None`; the
//! classifier asks them in turn after Plimsoll's own layout and BullMQ's
//! (which needs the configured prefixes, so it lives with the classifier).
//! What each library writes was read off the real libraries: see the
//! tests in `families.rs` and the fill scripts under `bench/`.

use super::family::{Family, Layout, Role};

pub(super) fn celery(key: &str) -> Option<Family> {
    let family = |pattern: &str, name: &str| {
        Some(Family::known(
            Layout::Celery,
            pattern.to_string(),
            name.to_string(),
        ))
    };
    if key == "celery" || key.starts_with("celery\x06\x16") {
        return family("celery", "Celery queue celery");
    }
    if key.starts_with("celery-task-meta-") {
        return family("celery-task-meta-<id>", "Celery task results");
    }
    if key.starts_with("celery-taskset-meta-") {
        return family("celery-taskset-meta-<id>", "Celery group results");
    }
    if key.starts_with("_kombu.binding.") {
        return family(
            "_kombu.binding.<exchange>",
            "Celery (kombu) exchange bindings",
        );
    }
    if key.starts_with("_kombu.binding_permanent.") {
        return family(
            "_kombu.binding_permanent.<exchange>",
            "Celery (kombu) permanent exchange bindings",
        );
    }
    if key == "_kombu.binding_deadlines" {
        return family(
            "_kombu.binding_deadlines",
            "Celery (kombu) binding deadlines",
        );
    }
    if matches!(key, "unacked" | "unacked_index" | "unacked_mutex") {
        return family("unacked*", "Celery unacknowledged messages");
    }
    None
}

pub(super) fn rq(key: &str) -> Option<Family> {
    let segments: Vec<&str> = key.split(':').collect();
    if segments.len() < 2 || segments[0] != "rq" {
        return None;
    }
    let family = |pattern: String, name: String| Some(Family::known(Layout::Rq, pattern, name));
    match (segments[1], segments.len()) {
        ("job", 3) => family("rq:job:<id>".into(), "RQ job hashes".into()),
        ("job", _) => family(
            "rq:job:<id>:<relation>".into(),
            "RQ job dependencies".into(),
        ),
        ("queue", 3) => family(
            format!("rq:queue:{}", segments[2]),
            format!("RQ queue {}: waiting jobs", segments[2]),
        ),
        (
            registry @ ("wip" | "finished" | "failed" | "deferred" | "scheduled" | "canceled"
            | "intermediate"),
            3,
        ) => {
            let what = if registry == "wip" {
                "started"
            } else {
                registry
            };
            family(
                format!("rq:{registry}:{}", segments[2]),
                format!("RQ queue {}: {what} registry", segments[2]),
            )
        }
        ("results", _) => family("rq:results:<id>".into(), "RQ job results".into()),
        ("worker", _) => family("rq:worker:<name>".into(), "RQ workers".into()),
        ("executions" | "execution", _) => {
            family("rq:executions:<id>".into(), "RQ executions".into())
        }
        _ => family("rq:<state>".into(), "RQ state".into()),
    }
}

/// apalis-redis names its keys `<namespace>:<what>`, where the namespace is
/// the queue (recent versions) or a Rust type path with `::` (older ones).
pub(super) fn apalis(key: &str) -> Option<Family> {
    const ALL: &[&str] = &[
        "active",
        "done",
        "failed",
        "dead",
        "inflight",
        "data",
        "meta",
        "scheduled",
        "signal",
        "workers",
        "idempotency",
        "consumers",
    ];
    const DISTINCT: &[&str] = &["done", "inflight", "signal", "data"];
    let (mut namespace, mut what) = key.rsplit_once(':')?;
    // Per-worker inflight sets: `<namespace>:inflight:<worker>`.
    if let Some((ns, middle)) = namespace.rsplit_once(':')
        && middle == "inflight"
        && !ALL.contains(&what)
    {
        namespace = ns;
        what = "inflight";
    }
    if namespace.is_empty() || namespace.ends_with(':') || !ALL.contains(&what) {
        return None;
    }
    let type_path = namespace.contains("::");
    let distinct = DISTINCT.contains(&what) && !namespace.contains(':');
    if !type_path && !distinct {
        return None;
    }
    let label = match what {
        "done" => "done tasks",
        "failed" => "failed tasks",
        "dead" => "dead tasks",
        "data" => "task data",
        "active" | "scheduled" | "inflight" => "pending, scheduled and running tasks",
        _ => "queue state",
    };
    let pattern_what = match label {
        "pending, scheduled and running tasks" => "<active|scheduled|inflight>",
        "queue state" => "<state>",
        _ => what,
    };
    Some(
        Family::known(
            Layout::Apalis,
            format!("{namespace}:{pattern_what}"),
            format!("apalis queue {namespace}: {label}"),
        )
        .queue(namespace, namespace, Role::Other),
    )
}

pub(super) fn sidekiq(key: &str) -> Option<Family> {
    let segments: Vec<&str> = key.split(':').collect();
    let core = |rest: &[&str]| -> Option<(String, String)> {
        Some(match rest {
            ["queues"] | ["processes"] => ("<state>".into(), "Sidekiq state".into()),
            ["schedule"] => ("schedule".into(), "Sidekiq scheduled jobs".into()),
            ["retry"] => ("retry".into(), "Sidekiq retry set".into()),
            ["dead"] => ("dead".into(), "Sidekiq dead set".into()),
            ["queue", name] => (format!("queue:{name}"), format!("Sidekiq queue {name}")),
            ["stat", "processed" | "failed", ..] => {
                ("stat:<…>".into(), "Sidekiq statistics".into())
            }
            _ => return None,
        })
    };
    if let Some((pattern, name)) = core(&segments) {
        return Some(Family::known(Layout::Sidekiq, pattern, name));
    }
    // A process's heartbeat: its identity `<hostname>:<pid>:<nonce>` (the
    // nonce is SecureRandom.hex(6)), and `…:work` (`…:workers` before
    // Sidekiq 7) for what its threads are running.
    if let [_, pid, nonce, rest @ ..] = segments.as_slice()
        && !pid.is_empty()
        && pid.bytes().all(|b| b.is_ascii_digit())
        && nonce.len() == 12
        && nonce.bytes().all(|b| b.is_ascii_hexdigit())
    {
        let (pattern, name) = match rest {
            [] => ("<host>:<pid>:<nonce>", "Sidekiq process heartbeats"),
            ["work" | "workers"] => (
                "<host>:<pid>:<nonce>:work",
                "Sidekiq processes' running work",
            ),
            _ => return None,
        };
        return Some(Family::known(
            Layout::Sidekiq,
            pattern.to_string(),
            name.to_string(),
        ));
    }
    // redis-namespace puts one segment in front.
    if segments.len() >= 2
        && let Some((pattern, name)) = core(&segments[1..])
    {
        let ns = segments[0];
        return Some(Family::known(
            Layout::Sidekiq,
            format!("{ns}:{pattern}"),
            format!("{name} (namespace {ns})"),
        ));
    }
    None
}
