//! Key families: which keys belong together, and what to call them.
//!
//! A key is split at `:`; every segment that looks like an identifier (a
//! number, a UUID, a date, a hex hash, a mixed letters-and-digits token such
//! as a ULID or an ObjectId) collapses to a placeholder, so
//! `session:3f2a…-…:cart` and `session:9b1c…:cart` are both
//! `session:<uuid>:cart`. Identifiers embedded in a segment
//! (`celery-task-meta-<uuid>`, `invoice_2024-01-05`) collapse too.
//!
//! Names that do not look like identifiers but are many (user names, host
//! names) are caught later, by count: when one segment position has more
//! than [`DEFAULT_MAX_SIBLINGS`] different literal values under the same
//! pattern, they merge into `<*>` (see [`Classifier::widen`]).
//!
//! The layouts of the common Redis job queues are known by name, so that a
//! report says "BullMQ queue mail: completed jobs" rather than
//! `bull:mail:completed`:
//!
//! - Plimsoll: `<prefix>:{<queue>}:jobs|waiting:<p>|scheduled|completed|dead|…`
//! - BullMQ: `bull:<queue>:<id>` job hashes (and `:logs`, `:lock`,
//!   `:dependencies`, `:processed`), `:completed` / `:failed` / `:delayed` /
//!   `:prioritized` sorted sets, `:wait` / `:active` / `:paused` lists,
//!   `:events` stream, `:meta`, `:id`, `:marker`, `:pc`, `:stalled-check`,
//!   `:repeat`, `:de:<id>`, `:metrics:…`.
//! - Sidekiq (optionally under a namespace): `queue:<name>` lists, `queues`,
//!   `schedule` / `retry` / `dead` sorted sets, `processes`, `stat:…`, and
//!   each process's heartbeat `<hostname>:<pid>:<12 hex>` with its `:work`.
//! - Celery (Redis broker and backend): the `celery` list (and priority
//!   lists `celery\x06\x16<n>`), `celery-task-meta-<uuid>` results,
//!   `celery-taskset-meta-<id>`, `_kombu.binding.<exchange>`,
//!   `_kombu.binding_permanent.<exchange>`, `_kombu.binding_deadlines`, `unacked`,
//!   `unacked_index`, `unacked_mutex`.
//! - RQ: `rq:job:<id>` hashes (and `:dependents`, …), `rq:queue:<name>`,
//!   registries `rq:wip|finished|failed|deferred|scheduled|canceled:<queue>`,
//!   `rq:results:<id>` streams, `rq:worker:<name>`, `rq:queues`, `rq:workers`.
//! - apalis-redis: `<namespace>:active|done|failed|dead|inflight|data|meta|
//!   scheduled|signal|workers|idempotency`, where the namespace is a queue
//!   name or a Rust type path such as `email::Email`.

use super::layouts;
use crate::keyspace;

use super::segments::collapse_segment;
use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

pub use super::family::{Family, Layout, Role};

/// Literal values at one position above which they merge into `<*>`.
pub const DEFAULT_MAX_SIBLINGS: usize = 32;

/// Groups keys into families; holds the `<*>` merges learnt so far.
#[derive(Debug, Clone)]
pub struct Classifier {
    bullmq_prefixes: Vec<String>,
    plimsoll_prefixes: Vec<String>,
    /// Generic patterns that have been widened, e.g. `user:<*>:cart`.
    wide: HashSet<String>,
    /// Segment counts of the widened patterns, to skip keys that cannot match.
    wide_lengths: HashSet<usize>,
}

impl Default for Classifier {
    fn default() -> Self {
        Self::new(&["bull".to_string()])
    }
}

impl Classifier {
    /// A classifier that knows BullMQ under `bullmq_prefixes` (BullMQ's
    /// `prefix` option; `bull` by default, and its hash-tagged form `{bull}`).
    pub fn new(bullmq_prefixes: &[String]) -> Self {
        let mut prefixes: Vec<String> = bullmq_prefixes.to_vec();
        for p in bullmq_prefixes {
            prefixes.push(format!("{{{p}}}"));
        }
        Self {
            bullmq_prefixes: prefixes,
            plimsoll_prefixes: vec![crate::keyspace::DEFAULT_PREFIX.to_string()],
            wide: HashSet::new(),
            wide_lengths: HashSet::new(),
        }
    }

    /// Knows Plimsoll's keys under these prefixes (the default
    /// [`keyspace::DEFAULT_PREFIX`](crate::keyspace::DEFAULT_PREFIX) alone
    /// otherwise), longest first so that `acme:jobs` wins over `acme`.
    pub fn with_plimsoll_prefixes(mut self, prefixes: &[String]) -> Self {
        let mut prefixes = prefixes.to_vec();
        prefixes.sort_by_key(|p| std::cmp::Reverse(p.len()));
        prefixes.dedup();
        self.plimsoll_prefixes = prefixes;
        self
    }

    /// The family of `key`.
    pub fn classify(&self, key: &[u8]) -> Family {
        let key = String::from_utf8_lossy(key);
        if let Some(family) = self.known_layout(&key) {
            return family;
        }
        let segments: Vec<Cow<'_, str>> = key.split(':').map(collapse_segment).collect();
        if !self.wide.is_empty() && self.wide_lengths.contains(&segments.len()) {
            for i in 0..segments.len() {
                let candidate = join_with(&segments, i, "<*>");
                if self.wide.contains(&candidate) {
                    return Family::generic(candidate);
                }
            }
        }
        Family::generic(segments.join(":"))
    }

    /// Looks for positions where more than `max_siblings` generic patterns
    /// differ only by one literal segment, and merges each such group into a
    /// `<*>` pattern. Returns the merges as (old pattern, new pattern); later
    /// [`classify`](Self::classify) calls apply them to new keys.
    pub fn widen<'a>(
        &mut self,
        patterns: impl Iterator<Item = &'a str>,
        max_siblings: usize,
    ) -> Vec<(String, String)> {
        let mut groups: HashMap<String, Vec<String>> = HashMap::new();
        for pattern in patterns {
            let segments: Vec<&str> = pattern.split(':').collect();
            for (i, segment) in segments.iter().enumerate() {
                if segment.starts_with('<') || segments.len() < 2 {
                    continue;
                }
                groups
                    .entry(join_with(&segments, i, "<*>"))
                    .or_default()
                    .push(pattern.to_string());
            }
        }
        let mut merges = Vec::new();
        let mut moved = HashSet::new();
        let mut candidates: Vec<(String, Vec<String>)> = groups
            .into_iter()
            .filter(|(_, members)| members.len() > max_siblings)
            .collect();
        // Biggest groups first, so each pattern joins the widest merge.
        candidates.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then(a.0.cmp(&b.0)));
        for (wide, members) in candidates {
            self.wide_lengths.insert(wide.split(':').count());
            self.wide.insert(wide.clone());
            for member in members {
                if moved.insert(member.clone()) {
                    merges.push((member, wide.clone()));
                }
            }
        }
        merges
    }

    fn known_layout(&self, key: &str) -> Option<Family> {
        self.plimsoll(key)
            .or_else(|| self.bullmq(key))
            .or_else(|| layouts::celery(key))
            .or_else(|| layouts::rq(key))
            .or_else(|| layouts::apalis(key))
            .or_else(|| layouts::sidekiq(key))
    }

    /// Plimsoll's own keys, read by the keyspace that names them.
    fn plimsoll(&self, key: &str) -> Option<Family> {
        use crate::keyspace::{ParsedKey, QueueKey};
        // A queue's keys are known under any prefix by their hash tag (the
        // prefix is all before `:{`, as neither may hold a brace), so that a
        // report or a `trim family` run without `--prefix` still sees a
        // queue's keys as the queue's; the registry and cache keys have no
        // such mark and need their prefix configured.
        let under_any_prefix = || {
            let prefix = &key[..key.find(":{")?];
            match keyspace::parse(prefix, key)? {
                queue @ ParsedKey::Queue { .. } => Some((prefix, queue)),
                _ => None,
            }
        };
        let (prefix, parsed) = self
            .plimsoll_prefixes
            .iter()
            .find_map(|prefix| Some((prefix.as_str(), keyspace::parse(prefix, key)?)))
            .or_else(under_any_prefix)?;
        let (queue, key) = match parsed {
            ParsedKey::QueueRegistry => {
                return Some(Family::known(
                    Layout::Plimsoll,
                    key.to_string(),
                    "Plimsoll queue registry".into(),
                ));
            }
            ParsedKey::Cache { namespace } => {
                let mut family = Family::known(
                    Layout::Plimsoll,
                    format!("{prefix}:cache:{namespace}:<key>"),
                    format!("Plimsoll cache {namespace}"),
                );
                family.role = Role::Cache;
                return Some(family);
            }
            ParsedKey::Queue { queue, key } => (queue, key),
        };
        let base = format!("{prefix}:{{{queue}}}");
        let (what, pattern, role) = match key {
            QueueKey::Jobs => ("job records", format!("{base}:jobs"), Role::Other),
            QueueKey::Waiting(_) => ("waiting lists", format!("{base}:waiting:<n>"), Role::Other),
            QueueKey::Scheduled => ("scheduled jobs", format!("{base}:scheduled"), Role::Other),
            QueueKey::Completed => (
                "completed jobs",
                format!("{base}:completed"),
                Role::Completed,
            ),
            QueueKey::Dead => ("dead jobs", format!("{base}:dead"), Role::Other),
            QueueKey::Idempotency => (
                "idempotency keys",
                format!("{base}:idem:<key>"),
                Role::Other,
            ),
            QueueKey::Workers
            | QueueKey::Active
            | QueueKey::Meta
            | QueueKey::IdRuns
            | QueueKey::IdRun
            | QueueKey::Stats
            | QueueKey::Notify => ("queue state", format!("{base}:<state>"), Role::Other),
        };
        Some(
            Family::known(
                Layout::Plimsoll,
                pattern,
                format!("Plimsoll queue {queue}: {what}"),
            )
            .queue(prefix, queue, role),
        )
    }

    fn bullmq(&self, key: &str) -> Option<Family> {
        let segments: Vec<&str> = key.split(':').collect();
        if segments.len() < 3 || !self.bullmq_prefixes.iter().any(|p| p == segments[0]) {
            return None;
        }
        let (prefix, queue) = (segments[0], segments[1]);
        let base = format!("{prefix}:{queue}");
        let name = |what: &str| format!("BullMQ queue {queue}: {what}");
        let family = |pattern: String, what: &str, role: Role| {
            Family::known(Layout::BullMq, pattern, name(what)).queue(prefix, queue, role)
        };
        let suffix = segments[2];
        Some(match (suffix, segments.len()) {
            ("completed", 3) => family(
                format!("{base}:completed"),
                "completed jobs",
                Role::Completed,
            ),
            ("failed", 3) => family(format!("{base}:failed"), "failed jobs", Role::Failed),
            ("wait" | "paused" | "active" | "prioritized" | "delayed" | "waiting-children", 3) => {
                family(
                    format!("{base}:<wait|active|delayed|…>"),
                    "waiting, active and delayed lists",
                    Role::Other,
                )
            }
            ("events", 3) => family(format!("{base}:events"), "events stream", Role::Other),
            ("meta" | "id" | "marker" | "pc" | "stalled" | "stalled-check" | "limiter", 3) => {
                family(format!("{base}:<state>"), "queue state", Role::Other)
            }
            ("repeat", _) => family(format!("{base}:repeat"), "repeatable jobs", Role::Other),
            ("de", 4) => family(format!("{base}:de:<id>"), "deduplication keys", Role::Other),
            ("metrics", _) => family(format!("{base}:metrics"), "metrics", Role::Other),
            (_, 3) => family(format!("{base}:<id>"), "job hashes", Role::JobHashes),
            (_, 4) if segments[3] == "logs" => {
                family(format!("{base}:<id>:logs"), "job logs", Role::JobLogs)
            }
            (_, 4) if segments[3] == "lock" => {
                family(format!("{base}:<id>:lock"), "job locks", Role::Other)
            }
            (_, 4)
                if matches!(
                    segments[3],
                    "dependencies" | "processed" | "failed" | "unsuccessful"
                ) =>
            {
                family(
                    format!("{base}:<id>:<dependencies>"),
                    "job dependencies",
                    Role::Other,
                )
            }
            _ => return None,
        })
    }
}

fn join_with<S: AsRef<str>>(segments: &[S], at: usize, with: &str) -> String {
    let mut out = String::new();
    for (i, s) in segments.iter().enumerate() {
        if i > 0 {
            out.push(':');
        }
        out.push_str(if i == at { with } else { s.as_ref() });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(key: &str) -> String {
        Classifier::default().classify(key.as_bytes()).pattern
    }

    fn name(key: &str) -> String {
        Classifier::default().classify(key.as_bytes()).name
    }

    #[test]
    fn identifiers_collapse() {
        assert_eq!(pattern("user:1234:profile"), "user:<n>:profile");
        assert_eq!(
            pattern("session:3f2a9c1e-8b7d-4e6f-a5b4-c3d2e1f0a9b8"),
            "session:<uuid>"
        );
        assert_eq!(
            pattern("cache:page:5d41402abc4b2a76b9719d911017c592"),
            "cache:page:<hash>"
        );
        assert_eq!(pattern("events:2024-01-05"), "events:<date>");
        assert_eq!(pattern("upload:01HQZ8M9Z5X3K7V2B4N6P8R0TW"), "upload:<id>");
        assert_eq!(
            pattern("order:507f1f77bcf86cd799439011:items"),
            "order:<hash>:items"
        );
        assert_eq!(pattern("invoice_2024-01-05"), "invoice_<n>-<n>-<n>");
        assert_eq!(pattern("rate.limit.42"), "rate.limit.<n>");
        assert_eq!(pattern("config"), "config");
        assert_eq!(pattern("feature-flags"), "feature-flags");
    }

    #[test]
    fn queue_layouts_are_named() {
        assert_eq!(
            name("bull:mail:completed"),
            "BullMQ queue mail: completed jobs"
        );
        assert_eq!(name("bull:mail:1234"), "BullMQ queue mail: job hashes");
        assert_eq!(name("bull:mail:1234:logs"), "BullMQ queue mail: job logs");
        assert_eq!(
            name("bull:mail:wait"),
            "BullMQ queue mail: waiting, active and delayed lists"
        );
        assert_eq!(name("{bull}:mail:failed"), "BullMQ queue mail: failed jobs");
        assert_eq!(
            name("plimsoll:{mail}:dead"),
            "Plimsoll queue mail: dead jobs"
        );
        assert_eq!(
            name("plimsoll:{mail}:waiting:3"),
            "Plimsoll queue mail: waiting lists"
        );
        assert_eq!(name("queue:default"), "Sidekiq queue default");
        assert_eq!(name("dead"), "Sidekiq dead set");
        assert_eq!(name("myapp:retry"), "Sidekiq retry set (namespace myapp)");
        assert_eq!(name("stat:processed:2024-01-05"), "Sidekiq statistics");
        assert_eq!(
            name("celery-task-meta-3f2a9c1e-8b7d-4e6f-a5b4-c3d2e1f0a9b8"),
            "Celery task results"
        );
        assert_eq!(
            name("_kombu.binding.celery"),
            "Celery (kombu) exchange bindings"
        );
        assert_eq!(name("celery"), "Celery queue celery");
        assert_eq!(
            name("_kombu.binding_permanent.celery"),
            "Celery (kombu) permanent exchange bindings"
        );
        assert_eq!(
            name("_kombu.binding_deadlines"),
            "Celery (kombu) binding deadlines"
        );
        assert_eq!(
            name("web-1.example.com:4242:0a1b2c3d4e5f"),
            "Sidekiq process heartbeats"
        );
        assert_eq!(
            name("web-1.example.com:4242:0a1b2c3d4e5f:work"),
            "Sidekiq processes' running work"
        );
        assert_eq!(
            name("worker:12:0a1b2c3d4e5f:workers"),
            "Sidekiq processes' running work"
        );
        assert_eq!(
            name("rq:job:3f2a9c1e-8b7d-4e6f-a5b4-c3d2e1f0a9b8"),
            "RQ job hashes"
        );
        assert_eq!(
            name("rq:finished:default"),
            "RQ queue default: finished registry"
        );
        assert_eq!(name("rq:wip:default"), "RQ queue default: started registry");
        assert_eq!(name("rq:results:abc"), "RQ job results");
        assert_eq!(
            name("email::Email:done"),
            "apalis queue email::Email: done tasks"
        );
        assert_eq!(
            name("apalis::Email:data"),
            "apalis queue apalis::Email: task data"
        );
        assert_eq!(
            name("mailer:inflight:worker-1"),
            "apalis queue mailer: pending, scheduled and running tasks"
        );
    }

    /// The id run keys were not known (found in review): each producer's
    /// run key became a family of its own, named by no queue, and a trim by
    /// family did not see it as a queue's key.
    #[test]
    fn every_key_a_queue_makes_is_named_as_that_queues() {
        let queue = crate::keyspace::QueueName::new("mail").unwrap();
        let keys = crate::keyspace::QueueKeys::new("plimsoll", &queue);
        for (key, _) in crate::keyspace::tests::every_queue_key(&keys) {
            let named = name(&key);
            assert!(
                named.starts_with("Plimsoll queue mail: "),
                "{key} is named {named:?}"
            );
        }
    }

    /// Found in review: with `keyspace::parse` only the configured
    /// prefixes were Plimsoll's, so a queue under another prefix became
    /// generic families, and `trim family` (which knows no prefix) would
    /// have offered and run a trim of a queue's own keys.
    #[test]
    fn a_queues_keys_are_its_own_under_a_prefix_nobody_configured() {
        let c = Classifier::default();
        let queue = crate::keyspace::QueueName::new("mail").unwrap();
        let keys = crate::keyspace::QueueKeys::new("acme:jobs", &queue);
        for (key, _) in crate::keyspace::tests::every_queue_key(&keys) {
            let family = c.classify(key.as_bytes());
            assert_eq!(family.layout, Layout::Plimsoll, "{key}");
            assert_eq!(family.prefix.as_deref(), Some("acme:jobs"), "{key}");
            assert_eq!(family.queue.as_deref(), Some("mail"), "{key}");
        }
        // A brace in someone else's key does not make it a queue's.
        assert_eq!(c.classify(b"acme:{x}:other").layout, Layout::Generic);
    }

    /// The classifier re-parsed Plimsoll's layout with "plimsoll" written
    /// in: a queue under another prefix lost its registry, and the cache's
    /// keys were nobody's.
    #[test]
    fn a_custom_prefix_and_the_cache_are_attributed_as_plimsolls() {
        let c = Classifier::default().with_plimsoll_prefixes(&["acme".into(), "acme:jobs".into()]);
        let queue = crate::keyspace::QueueName::new("mail").unwrap();
        let keys = crate::keyspace::QueueKeys::new("acme:jobs", &queue);
        for (key, _) in crate::keyspace::tests::every_queue_key(&keys) {
            let family = c.classify(key.as_bytes());
            assert_eq!(family.layout, Layout::Plimsoll, "{key}");
            assert_eq!(family.prefix.as_deref(), Some("acme:jobs"), "{key}");
            assert_eq!(family.queue.as_deref(), Some("mail"), "{key}");
        }
        let registry = c.classify(b"acme:queues");
        assert_eq!(registry.name, "Plimsoll queue registry");
        let ns = crate::keyspace::CacheNamespace::new("users").unwrap();
        let value = format!("{}42", crate::keyspace::cache_base("acme", &ns));
        let cached = c.classify(value.as_bytes());
        assert_eq!(cached.layout, Layout::Plimsoll);
        assert_eq!(cached.pattern, "acme:cache:users:<key>");
        assert_eq!(cached.name, "Plimsoll cache users");
        assert_eq!(cached.role, Role::Cache);
    }

    #[test]
    fn bullmq_roles_tell_hashes_from_sets() {
        let c = Classifier::default();
        let f = c.classify(b"bull:mail:42");
        assert_eq!(f.role, Role::JobHashes);
        assert_eq!(f.queue.as_deref(), Some("mail"));
        assert_eq!(f.prefix.as_deref(), Some("bull"));
        assert_eq!(c.classify(b"bull:mail:completed").role, Role::Completed);
    }

    #[test]
    fn many_literal_names_widen_into_a_wildcard() {
        let mut c = Classifier::default();
        let names: Vec<String> = (0..40)
            .map(|i| format!("cart:{}:items", names_of(i)))
            .collect();
        let patterns: Vec<String> = names
            .iter()
            .map(|k| c.classify(k.as_bytes()).pattern)
            .collect();
        let merges = c.widen(patterns.iter().map(String::as_str), DEFAULT_MAX_SIBLINGS);
        assert_eq!(merges.len(), 40);
        assert!(merges.iter().all(|(_, to)| to == "cart:<*>:items"));
        assert_eq!(c.classify(b"cart:zelda:items").pattern, "cart:<*>:items");
        // Few siblings stay apart.
        assert_eq!(c.classify(b"config:mail").pattern, "config:mail");
    }

    fn names_of(i: usize) -> String {
        let letters = [
            "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi",
        ];
        format!("{}{}", letters[i % 8], "x".repeat(i / 8))
    }
}

#[cfg(test)]
mod timing {
    use super::*;

    #[test]
    #[ignore = "timing, run by hand"]
    fn classify_cost_per_key() {
        let keys: Vec<String> = (0..200_000u64)
            .map(|i| match i % 5 {
                0 => format!("session:{:08x}-aaaa-4bbb-8ccc-{:012x}", i, i),
                1 => format!("user:{i}:profile"),
                2 => format!("bull:mail:{i}"),
                3 => format!("cache:page:{i:032x}"),
                _ => format!("celery-task-meta-{:08x}-aaaa-4bbb-8ccc-{:012x}", i, i),
            })
            .collect();
        let c = Classifier::default();
        let start = std::time::Instant::now();
        let mut n = 0;
        for k in &keys {
            n += c.classify(k.as_bytes()).pattern.len();
        }
        let per_key = start.elapsed().as_nanos() as f64 / keys.len() as f64;
        eprintln!("classify: {per_key:.0} ns per key ({n})");
    }
}
