//! The `plimsoll trim` dry run that would trim a family of a memory
//! report: an alert prints it beside each growing family, so that whoever
//! reads it can see what trimming would free without working out the target
//! and its flags.

use crate::guard::attribute::FamilyReport;
use crate::guard::attribute::families::Layout;

/// The `plimsoll trim` command (a dry run: it changes nothing) that would
/// trim `family` of a memory report, for an alert or a report to print;
/// None for families no target trims (RQ, Celery, apalis, a queue's
/// pending work). The selection is a starting point for the dry run, which
/// shows what it would remove before anyone adds `--yes`.
pub fn trim_command(family: &FamilyReport) -> Option<String> {
    let queue = family.queue.as_deref();
    match family.layout {
        Layout::BullMq => {
            let queue = queue?;
            let (set, arg) = if family.pattern.ends_with(":completed") {
                ("completed", "completed")
            } else if family.pattern.ends_with(":failed") {
                ("failed", "failed")
            } else {
                return None;
            };
            let prefix = family.pattern.strip_suffix(&format!(":{queue}:{set}"))?;
            let prefix_arg = if prefix == "bull" {
                String::new()
            } else {
                format!(" --bullmq-prefix {}", shell_word(prefix))
            };
            Some(format!(
                "plimsoll trim bullmq {} --set {arg}{prefix_arg} --keep 1000",
                shell_word(queue)
            ))
        }
        Layout::Sidekiq => {
            let (namespace, set) = match family.pattern.rsplit_once(':') {
                Some((namespace, set)) => (Some(namespace), set),
                None => (None, family.pattern.as_str()),
            };
            if !matches!(set, "dead" | "retry") {
                return None;
            }
            let namespace_arg = namespace
                .map(|ns| format!(" --namespace {}", shell_word(ns)))
                .unwrap_or_default();
            Some(format!(
                "plimsoll trim sidekiq {set}{namespace_arg} --older-than 7d"
            ))
        }
        // A cache's family: `<prefix>:cache:<namespace>:<key>`, no queue.
        Layout::Plimsoll if queue.is_none() && family.pattern.contains(":cache:") => Some(format!(
            "plimsoll trim family {} --older-than 1d",
            shell_word(&family.pattern)
        )),
        Layout::Plimsoll => {
            // A queue's pattern is `<prefix>:{<queue>}:…`.
            let prefix = match family.pattern.split_once(":{").map(|(prefix, _)| prefix) {
                Some(prefix) if prefix != crate::keyspace::DEFAULT_PREFIX => {
                    format!(" --prefix {}", shell_word(prefix))
                }
                _ => String::new(),
            };
            Some(format!(
                "plimsoll trim plimsoll {}{prefix}",
                shell_word(queue?)
            ))
        }
        Layout::Generic => Some(format!(
            "plimsoll trim family {} --older-than 7d",
            shell_word(&family.pattern)
        )),
        Layout::Rq => {
            let rest = family.pattern.strip_prefix("rq:")?;
            let (registry, queue) = rest.split_once(':')?;
            if !matches!(registry, "finished" | "failed") {
                return None;
            }
            Some(format!(
                "plimsoll trim rq {} --registry {registry} --older-than 7d",
                shell_word(queue)
            ))
        }
        Layout::Celery if family.pattern.starts_with("celery-task") => {
            Some("plimsoll trim celery results --older-than 7d".into())
        }
        Layout::Celery | Layout::Apalis => None,
    }
}

/// `word` as one shell word: as is when it is plain, else single-quoted.
fn shell_word(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:/@%+=,".contains(c));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::guard::attribute::families::Classifier;

    fn family(pattern: &str) -> FamilyReport {
        let f = Classifier::default().classify(pattern.as_bytes());
        FamilyReport {
            pattern: f.pattern,
            name: f.name,
            layout: f.layout,
            queue: f.queue,
            keys: 1,
            bytes: 1,
            bytes_error: 0,
            sampled: 1,
            sampled_estimated: 0,
            no_ttl_share: 1.0,
            types: BTreeMap::new(),
            growth_bytes: None,
            growth_keys: None,
            growth_interval_secs: None,
            suspected_leak: false,
        }
    }

    #[test]
    fn each_trimmable_family_gets_the_dry_run_that_trims_it() {
        let command = |key: &str| trim_command(&family(key));
        assert_eq!(
            command("bull:mail:completed").as_deref(),
            Some("plimsoll trim bullmq mail --set completed --keep 1000")
        );
        assert_eq!(
            command("dead").as_deref(),
            Some("plimsoll trim sidekiq dead --older-than 7d")
        );
        assert_eq!(
            command("session:3f2a5b7c-1d2e-4f60-8a9b-0c1d2e3f4a5b").as_deref(),
            Some("plimsoll trim family 'session:<uuid>' --older-than 7d")
        );
        assert_eq!(command("rq:job:3f2a5b7c-1d2e-4f60-8a9b-0c1d2e3f4a5b"), None);
        assert_eq!(
            command("celery-task-meta-3f2a5b7c-1d2e-4f60-8a9b-0c1d2e3f4a5b").as_deref(),
            Some("plimsoll trim celery results --older-than 7d")
        );
        assert_eq!(
            command("rq:finished:default").as_deref(),
            Some("plimsoll trim rq default --registry finished --older-than 7d")
        );
        assert_eq!(command("bull:mail:wait"), None);
        assert_eq!(
            command("plimsoll:{mail}:dead").as_deref(),
            Some("plimsoll trim plimsoll mail")
        );
        assert_eq!(
            command("acme:{mail}:dead").as_deref(),
            Some("plimsoll trim plimsoll mail --prefix acme")
        );
        assert_eq!(
            command("plimsoll:cache:users:42").as_deref(),
            Some("plimsoll trim family 'plimsoll:cache:users:<key>' --older-than 1d")
        );
        assert_eq!(shell_word("it's"), "'it'\\''s'");
    }
}
