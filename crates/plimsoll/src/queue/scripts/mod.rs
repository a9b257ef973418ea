//! The queue's Lua scripts, one file per state transition, loaded from
//! `crates/plimsoll/lua/queue/`.
//!
//! Each file starts with its shebang (`#!lua` with the flags it needs) and a
//! header naming every KEYS and ARGV entry and the reply. The helpers in
//! `lib.lua` are inserted right after the shebang line, so every script is
//! self-contained on the server: redis-rs sends it by SHA (`EVALSHA`) and
//! loads it again on `NOSCRIPT` after a restart or `SCRIPT FLUSH`. The one
//! exception is `enqueue`, which runs inside a MULTI/EXEC where that
//! fallback cannot happen: the producer loads it first and handles
//! `NOSCRIPT` itself (`queue/enqueue/writer.rs`).
//!
//! Every call's KEYS and ARGV are built in [`calls`], one builder per
//! script next to its per-call caps, and checked there against the headers.
//!
//! Scripts without `allow-oom` (`enqueue` and `reserve_ids`) are refused by
//! a full Redis, so a job is never half-written. The rest may run on a full
//! Redis because they move or remove data: completing jobs frees memory.

use std::sync::LazyLock;

use redis::Script;

pub(crate) mod calls;

const LIB: &str = include_str!("../../../lua/queue/lib.lua");

/// Builds a script from its file: shebang line, then `lib.lua`, then the body.
fn with_lib(source: &str) -> Script {
    Script::new(&source_with_lib(source))
}

/// A script file's source as Redis gets it: `lib.lua` after the shebang.
fn source_with_lib(source: &str) -> String {
    let (shebang, body) = source
        .split_once('\n')
        .expect("a script file starts with its shebang line");
    assert!(shebang.starts_with("#!lua"), "script lacks a shebang");
    format!("{shebang}\n{LIB}\n{body}")
}

/// The sources of the scripts a producer loads itself, on the one node that
/// serves the queue (or the registry): on a cluster, redis-rs sends a
/// `SCRIPT LOAD` to every node, so a node that does not answer (failing
/// over, stopped) held up the first enqueue of every queue on every shard.
/// Same text as in [`SCRIPTS`], so the same SHA.
pub(crate) struct ProducerSources {
    pub(crate) enqueue: String,
    pub(crate) reserve_ids: String,
    pub(crate) register: String,
}

pub(crate) static PRODUCER_SOURCES: LazyLock<ProducerSources> = LazyLock::new(|| ProducerSources {
    enqueue: source_with_lib(include_str!("../../../lua/queue/enqueue.lua")),
    reserve_ids: source_with_lib(include_str!("../../../lua/queue/reserve_ids.lua")),
    register: source_with_lib(include_str!("../../../lua/queue/register.lua")),
});

macro_rules! scripts {
    ($($name:ident => $file:literal,)*) => {
        /// Every queue script, compiled into the binary.
        pub(crate) struct Scripts {
            $(pub(crate) $name: Script,)*
        }

        pub(crate) static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| Scripts {
            $($name: with_lib(include_str!(concat!("../../../lua/queue/", $file))),)*
        });
    };
}

scripts! {
    reserve_ids => "reserve_ids.lua",
    enqueue => "enqueue.lua",
    fetch => "fetch.lua",
    complete => "complete.lua",
    fail => "fail.lua",
    hand_back => "hand_back.lua",
    heartbeat => "heartbeat.lua",
    rescue => "rescue.lua",
    promote => "promote.lua",
    cancel => "cancel.lua",
    inspect_job => "inspect_job.lua",
    counts => "counts.lua",
    retry_dead => "retry_dead.lua",
    purge_dead => "purge_dead.lua",
    trim => "trim.lua",
    register => "register.lua",
    time => "time.lua",
}
