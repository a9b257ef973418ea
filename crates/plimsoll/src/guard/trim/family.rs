//! Trimming a generic key family of the memory report (e.g.
//! `session:<uuid>`) by count or idle time, on every primary: every key
//! found is checked against the family's pattern, and one that belongs to a
//! known queue layout is skipped, whatever the pattern looks like.

use std::collections::BTreeMap;
use std::time::Instant;

use super::{
    BYTES_SAMPLE, Selection, TRIM_SCAN_COUNT, TrimOptions, TrimReport, mean_usage, unlink,
};
use crate::connection::Redis;
use crate::error::{Error, Result};
use crate::guard::attribute::families::{Classifier, Layout, Role};
use crate::guard::attribute::pacer::Pacer;
use crate::guard::attribute::scan::{DEFAULT_BUSY_LATENCY, DEFAULT_KEYS_PER_SECOND};
use crate::guard::attribute::segments::collapse_segment;

/// The `limit` keys with the longest idle times offered, kept in a heap.
struct LongestIdle {
    limit: usize,
    heap: std::collections::BinaryHeap<std::cmp::Reverse<(u64, String)>>,
}

impl LongestIdle {
    fn new(limit: usize) -> Self {
        Self {
            limit,
            heap: std::collections::BinaryHeap::new(),
        }
    }

    fn offer(&mut self, idle: u64, key: String) {
        if self.heap.len() < self.limit {
            self.heap.push(std::cmp::Reverse((idle, key)));
        } else if self
            .heap
            .peek()
            .is_some_and(|std::cmp::Reverse((least, _))| idle > *least)
        {
            self.heap.pop();
            self.heap.push(std::cmp::Reverse((idle, key)));
        }
    }

    /// Longest idle first.
    fn into_sorted(self) -> Vec<(u64, String)> {
        let mut keys: Vec<(u64, String)> = self.heap.into_iter().map(|r| r.0).collect();
        keys.sort_by_key(|k| std::cmp::Reverse(k.0));
        keys
    }
}

/// For a pattern written as a glob (`session:*`), which as a family
/// pattern matches nothing: what to write instead. (It used to trim
/// nothing and say nothing.)
fn glob_hint(pattern: &str) -> Option<String> {
    // A glob character outside the `<…>` placeholders.
    let globby = |segment: &str| {
        let mut in_placeholder = false;
        segment.chars().any(|c| match c {
            '<' => {
                in_placeholder = true;
                false
            }
            '>' => {
                in_placeholder = false;
                false
            }
            '*' | '?' | '[' => !in_placeholder,
            _ => false,
        })
    };
    if !pattern.split(':').any(globby) {
        return None;
    }
    let suggestion: Vec<String> = pattern
        .split(':')
        .map(|segment| {
            if globby(segment) {
                "<*>".to_string()
            } else {
                segment.to_string()
            }
        })
        .collect();
    Some(format!(
        "{pattern:?} is a glob, but trim family takes a family pattern as `plimsoll memory` \
         prints it, where identifiers are placeholders: e.g. 'session:<uuid>', or {:?} for any \
         one segment in place of each glob",
        suggestion.join(":")
    ))
}

/// A family pattern turned into a `SCAN MATCH` glob: placeholders become
/// `*`, glob characters in literal parts are escaped.
pub fn pattern_glob(pattern: &str) -> String {
    let mut out = String::new();
    let mut in_placeholder = false;
    for c in pattern.chars() {
        match c {
            '<' => {
                in_placeholder = true;
                out.push('*');
            }
            '>' if in_placeholder => in_placeholder = false,
            _ if in_placeholder => {}
            '*' | '?' | '[' | ']' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            _ => out.push(c),
        }
    }
    out
}

/// Whether `key` belongs to the generic family `pattern`: its collapsed
/// segments equal the pattern's, where `<*>` stands for any one segment
/// and a last `<key>` for the rest of the key, colons and all (a cache's
/// family: the caller's key is any bytes).
pub fn pattern_matches(pattern: &str, key: &str) -> bool {
    if let Some(head) = pattern.strip_suffix(":<key>") {
        let depth = head.split(':').count();
        let mut parts = key.splitn(depth + 1, ':');
        let key_head: Vec<&str> = parts.by_ref().take(depth).collect();
        return parts.next().is_some_and(|rest| !rest.is_empty())
            && pattern_matches(head, &key_head.join(":"));
    }
    let wanted: Vec<&str> = pattern.split(':').collect();
    let got: Vec<_> = key.split(':').map(collapse_segment).collect();
    wanted.len() == got.len()
        && wanted
            .iter()
            .zip(&got)
            .all(|(w, g)| *w == "<*>" || *w == g.as_ref())
}

/// A key of the pattern's shape, to tell which layout the pattern is of.
fn example_key(pattern: &str) -> String {
    pattern
        .replace("<uuid>", "3f2a9c1e-8b7d-4e6f-a5b4-c3d2e1f0a9b8")
        .replace("<hash>", "5d41402abc4b2a76b9719d911017c592")
        .replace("<date>", "2024-01-05")
        .replace("<id>", "01HQZ8M9Z5X3K7V2B4N6P8R0TW")
        .replace("<n>", "42")
        .replace("<*>", "x")
}

pub(super) async fn trim(
    redis: &Redis,
    pattern: &str,
    selection: Selection,
    options: &TrimOptions,
    report: &mut TrimReport,
) -> Result<()> {
    let classifier = Classifier::default()
        .with_plimsoll_prefixes(std::slice::from_ref(&options.plimsoll_prefix));
    let family = classifier.classify(example_key(pattern).as_bytes());
    // A cache's keys may go: each expires by itself, and a cache is an
    // optimisation that reads through to its loader when a key is gone.
    if family.layout != Layout::Generic && family.role != Role::Cache {
        return Err(Error::invalid(format!(
            "{pattern} is part of a {} queue ({}); trim it with the queue's own target \
             (plimsoll, bullmq, sidekiq), which keeps the queue consistent",
            family.layout.name(),
            family.name
        )));
    }
    if let Some(hint) = glob_hint(pattern) {
        return Err(Error::invalid(hint));
    }
    if pattern.is_empty() || pattern.split(':').all(|s| s == "<*>") {
        return Err(Error::invalid(format!(
            "family pattern {pattern:?} would match every key"
        )));
    }
    let glob = pattern_glob(pattern);
    let primaries = redis.primaries().await?;
    // Pass 1: count the family and how long each key has been idle.
    let mut idle_histogram: BTreeMap<u64, u64> = BTreeMap::new();
    let mut total = 0u64;
    // Per node, the longest idle keys seen: the first to go, whichever
    // rule decides, so the examples and the bytes are of keys that would
    // really go (the first keys walked included hot ones that stay).
    let mut longest_idle: Vec<LongestIdle> = Vec::with_capacity(primaries.len());
    let pass_started = Instant::now();
    let mut skipped = Skipped::default();
    for primary in &primaries {
        let mut pacer = Pacer::new(options.budget, DEFAULT_BUSY_LATENCY);
        let mut walker = Walker::new(&primary.redis, &glob, pattern, &classifier);
        let mut oldest = LongestIdle::new(BYTES_SAMPLE);
        while let Some(batch) = walker.next(&mut pacer).await? {
            for (key, idle) in batch {
                total += 1;
                *idle_histogram.entry(idle).or_default() += 1;
                oldest.offer(idle, key);
            }
        }
        report.commands += pacer.commands;
        longest_idle.push(oldest);
        skipped.add(walker.skipped);
    }
    report.skipped = skipped.count;
    report.skipped_examples = skipped.examples;
    // What goes: every key idle for `older_than` or longer, and the longest
    // idle beyond `keep`.
    let age_secs = selection.older_than.map(|a| a.as_secs());
    let by_age = age_secs.map_or(0, |age| {
        idle_histogram.range(age..).map(|(_, n)| n).sum::<u64>()
    });
    let by_count = selection.keep.map_or(0, |keep| total.saturating_sub(keep));
    let to_remove = by_age.max(by_count);
    // Remove idle > cutoff, and `quota` of the keys at idle == cutoff.
    let (mut cutoff, mut quota) = (u64::MAX, 0);
    if by_count > by_age {
        let mut above = 0;
        for (idle, n) in idle_histogram.iter().rev() {
            if above + n >= by_count {
                (cutoff, quota) = (*idle, by_count - above);
                break;
            }
            above += n;
        }
    } else if let Some(age) = age_secs {
        (cutoff, quota) = (age.saturating_sub(1), 0);
    }
    // Of the longest idle, those the cut-off takes, measured on their node.
    let (mut sampled, mut sampled_bytes) = (0usize, 0.0);
    let mut going: Vec<(u64, String)> = Vec::new();
    for (primary, oldest) in primaries.iter().zip(longest_idle) {
        let keys: Vec<(u64, String)> = oldest
            .into_sorted()
            .into_iter()
            .filter(|(idle, _)| *idle > cutoff || (*idle == cutoff && quota > 0))
            .collect();
        let names: Vec<String> = keys.iter().map(|(_, key)| key.clone()).collect();
        let mut pacer = Pacer::new(options.budget, DEFAULT_BUSY_LATENCY);
        pacer.take(names.len() as u64).await;
        sampled_bytes += mean_usage(&primary.redis, &names).await? * names.len() as f64;
        sampled += names.len();
        report.commands += pacer.commands;
        going.extend(keys);
    }
    going.sort_by_key(|k| std::cmp::Reverse(k.0));
    let mean = if sampled > 0 {
        sampled_bytes / sampled as f64
    } else {
        0.0
    };
    report.bytes_estimated = (mean * to_remove as f64) as u64;
    report.keys = to_remove;
    report.examples = going.into_iter().take(10).map(|(_, key)| key).collect();
    if !options.apply || to_remove == 0 {
        return Ok(());
    }
    // Pass 2. Idle times of keys nobody touched have grown by the time since
    // pass 1; shift the cut-off by as much. Keys touched since are younger
    // and stay.
    let cutoff = cutoff.saturating_add(pass_started.elapsed().as_secs());
    let mut removed = 0u64;
    for primary in &primaries {
        let mut pacer = Pacer::new(options.budget, DEFAULT_BUSY_LATENCY);
        let mut walker = Walker::new(&primary.redis, &glob, pattern, &classifier);
        while removed < to_remove
            && let Some(batch) = walker.next(&mut pacer).await?
        {
            let mut doomed = Vec::new();
            for (key, idle) in batch {
                if removed + doomed.len() as u64 >= to_remove {
                    break;
                }
                if idle > cutoff || (idle == cutoff && quota > 0) {
                    if idle == cutoff {
                        quota -= 1;
                    }
                    doomed.push(key);
                }
            }
            for chunk in doomed.chunks(options.batch) {
                pacer.take(chunk.len() as u64).await;
                removed += unlink(&primary.redis, chunk, false).await?;
                report.batches += 1;
            }
        }
        report.commands += pacer.commands;
    }
    report.keys = removed;
    Ok(())
}

/// Keys a generic trim left alone because they belong to a known layout.
#[derive(Debug, Default)]
struct Skipped {
    count: u64,
    /// `key (what it is)`, the first few.
    examples: Vec<String>,
}

impl Skipped {
    const EXAMPLES: usize = 10;

    fn note(&mut self, key: &str, family: &crate::guard::attribute::families::Family) {
        self.count += 1;
        if self.examples.len() < Self::EXAMPLES {
            self.examples.push(format!("{key} ({})", family.name));
        }
    }

    fn add(&mut self, other: Skipped) {
        self.count += other.count;
        let room = Self::EXAMPLES.saturating_sub(self.examples.len());
        self.examples.extend(other.examples.into_iter().take(room));
    }
}

/// Walks one node with `SCAN MATCH glob`, keeps the keys of the family, and
/// asks their idle time (`OBJECT IDLETIME`), one SCAN batch at a time. A key
/// that matches the pattern but belongs to a known layout is left out (and
/// counted in `skipped`), in every batch.
struct Walker<'a> {
    node: &'a Redis,
    glob: &'a str,
    pattern: &'a str,
    classifier: &'a Classifier,
    skipped: Skipped,
    cursor: u64,
    done: bool,
    /// Buckets visited per second: a command budget alone would let the
    /// SCANs keep Redis busy most of the time.
    keys: Pacer,
}

impl<'a> Walker<'a> {
    fn new(node: &'a Redis, glob: &'a str, pattern: &'a str, classifier: &'a Classifier) -> Self {
        Self {
            node,
            glob,
            pattern,
            classifier,
            skipped: Skipped::default(),
            cursor: 0,
            done: false,
            keys: Pacer::new(DEFAULT_KEYS_PER_SECOND, DEFAULT_BUSY_LATENCY),
        }
    }

    /// The next batch of (key, idle seconds); `None` when the walk is over.
    async fn next(&mut self, pacer: &mut Pacer) -> Result<Option<Vec<(String, u64)>>> {
        if self.done {
            return Ok(None);
        }
        self.keys.take(u64::from(TRIM_SCAN_COUNT)).await;
        pacer.take(1).await;
        let sent = Instant::now();
        let (next, keys): (u64, Vec<String>) = self
            .node
            .query(
                redis::cmd("SCAN")
                    .arg(self.cursor)
                    .arg("MATCH")
                    .arg(self.glob)
                    .arg("COUNT")
                    .arg(TRIM_SCAN_COUNT),
            )
            .await?;
        pacer.observe(sent.elapsed());
        self.keys.observe(sent.elapsed());
        self.cursor = next;
        self.done = next == 0;
        let mut members = Vec::with_capacity(keys.len());
        for key in keys {
            if !pattern_matches(self.pattern, &key) {
                continue;
            }
            let family = self.classifier.classify(key.as_bytes());
            if family.layout == Layout::Generic {
                members.push(key);
            } else {
                self.skipped.note(&key, &family);
            }
        }
        if members.is_empty() {
            return Ok(Some(Vec::new()));
        }
        let mut pipe = redis::pipe();
        for key in &members {
            pipe.cmd("OBJECT").arg("IDLETIME").arg(key);
        }
        pacer.take(members.len() as u64).await;
        let mut conn = self.node.clone();
        let idles: Vec<Option<u64>> = match pipe.query_async(&mut conn).await {
            Ok(idles) => idles,
            Err(err) if err.to_string().contains("LFU") => {
                return Err(Error::invalid(
                    "Redis runs an LFU maxmemory-policy, under which OBJECT IDLETIME is not \
                     kept; a generic trim cannot tell old keys from new ones there",
                ));
            }
            Err(err) => return Err(err.into()),
        };
        // A key that vanished since SCAN has no idle time and is skipped.
        Ok(Some(
            members
                .into_iter()
                .zip(idles)
                .filter_map(|(key, idle)| idle.map(|i| (key, i)))
                .collect(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // `trim family 'session:*'` matched nothing and said nothing.
    #[test]
    fn a_glob_gets_a_hint_at_the_family_pattern_to_write() {
        let hint = glob_hint("session:*").unwrap();
        assert!(hint.contains("'session:<uuid>'"), "{hint}");
        assert!(hint.contains("\"session:<*>\""), "{hint}");
        assert_eq!(glob_hint("cart:<*>:items"), None);
        assert_eq!(glob_hint("session:<uuid>"), None);
        assert!(glob_hint("user:<n>:c?rt").is_some());
    }

    #[test]
    fn patterns_become_escaped_globs() {
        assert_eq!(pattern_glob("session:<uuid>"), "session:*");
        assert_eq!(pattern_glob("cart:<*>:items"), "cart:*:items");
        assert_eq!(pattern_glob("we[ird]*:<n>"), "we\\[ird\\]\\*:*");
    }

    #[test]
    fn keys_match_their_family_only() {
        let p = "session:<uuid>";
        assert!(pattern_matches(
            p,
            "session:3f2a9c1e-8b7d-4e6f-a5b4-c3d2e1f0a9b8"
        ));
        assert!(!pattern_matches(
            p,
            "session:3f2a9c1e-8b7d-4e6f-a5b4-c3d2e1f0a9b8:extra"
        ));
        assert!(!pattern_matches(p, "session:42"));
        assert!(!pattern_matches(
            p,
            "sessions:3f2a9c1e-8b7d-4e6f-a5b4-c3d2e1f0a9b8"
        ));
        assert!(pattern_matches("cart:<*>:items", "cart:alice:items"));
        assert!(!pattern_matches("cart:<*>:items", "cart:alice:total"));
        // A cache's family takes the rest of the key, whatever it holds.
        let cache = "plimsoll:cache:users:<key>";
        assert!(pattern_matches(cache, "plimsoll:cache:users:42"));
        assert!(pattern_matches(cache, "plimsoll:cache:users:org:7:user:42"));
        assert!(!pattern_matches(cache, "plimsoll:cache:users:"));
        assert!(!pattern_matches(cache, "plimsoll:cache:orgs:42"));
    }
}
