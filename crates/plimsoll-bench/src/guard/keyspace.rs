//! The keys the guard workloads write: G1's 1,000,000 keys in 20 families
//! and G2's stream of 1 KiB values.

use crate::error::Result;
use plimsoll::Redis;

use super::{G1_KEYS, G2_VALUE};
use crate::slots::Placement;
use crate::sys::Nodes;

/// Writes `n` 1 KiB strings `leak:<seq>`.
pub(super) async fn write_keys(redis: &Redis, seq: &mut u64, n: u64) -> Result<()> {
    if n == 0 {
        return Ok(());
    }
    let value = vec![b'v'; G2_VALUE];
    let mut pipe = redis::pipe();
    for _ in 0..n {
        *seq += 1;
        pipe.cmd("SET")
            .arg(format!("leak:{seq}"))
            .arg(&value)
            .ignore();
    }
    let mut conn = redis.clone();
    pipe.query_async::<()>(&mut conn).await?;
    Ok(())
}

pub(super) fn uuid(i: u64) -> String {
    let h = i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let l = h.rotate_left(29) ^ 0x5851_F42D_4C95_7F2D;
    format!(
        "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
        (h >> 32) as u32,
        (h >> 16) as u16,
        (h & 0xfff) as u16,
        (l & 0xfff) as u16,
        l >> 16
    )
}

pub(super) fn text(i: u64, len: usize) -> String {
    let mut x = i.wrapping_mul(0x2545_F491_4F6C_DD1D) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (b'a' + (x % 26) as u8) as char
        })
        .collect()
}

/// 1,000,000 keys in 20 families, written by concurrent pipelines (one per
/// primary of a cluster).
pub(super) async fn populate(nodes: &Nodes, placement: &Placement) -> Result<()> {
    // (family, keys): the counts add up to G1_KEYS.
    let plan: &[(&str, u64)] = &[
        ("bullmq-mail-jobs", 150_000),
        ("bullmq-mail-logs", 15_000),
        ("bullmq-reports-jobs", 50_000),
        ("sidekiq", 340),
        ("celery-results", 120_000),
        ("rq-jobs", 80_000),
        ("rq-results", 30_000),
        ("sessions", 150_000),
        ("user-profiles", 100_000),
        ("user-carts", 50_000),
        ("leaderboards", 2_000),
        ("page-cache", 100_000),
        ("rate-limits", 50_000),
        ("event-streams", 30),
        ("orders", 40_000),
        ("tokens", 40_000),
        ("notifications", 20_000),
        ("apalis", 2),
        ("celery-broker", 6),
        // Large aggregates: hashes past the exact bound (Redis estimates
        // them), sorted sets and streams within it.
        ("big-hashes", 8),
        ("big-zsets", 20),
        ("big-streams", 6),
    ];
    let total: u64 = plan.iter().map(|(_, n)| n).sum();
    // Besides one key per item, the BullMQ jobs add their queues' wait
    // lists and completed / failed sets: five keys.
    let filler = G1_KEYS - total - 5;
    let mut jobs: Vec<(&str, u64, u64)> = Vec::new();
    for (family, n) in plan {
        let n = if *family == "page-cache" {
            n + filler
        } else {
            *n
        };
        let chunk = 5_000;
        let mut start = 0;
        while start < n {
            jobs.push((family, start, (start + chunk).min(n)));
            start += chunk;
        }
    }
    use futures::StreamExt;
    let results: Vec<Result<()>> =
        futures::stream::iter(jobs)
            .map(|(family, from, to)| async move {
                write_family(nodes, placement, family, from, to).await
            })
            .buffer_unordered(4)
            .collect()
            .await;
    for result in results {
        result?;
    }
    Ok(())
}

pub(super) async fn write_family(
    nodes: &Nodes,
    placement: &Placement,
    family: &str,
    from: u64,
    to: u64,
) -> Result<()> {
    let mut pipe = redis::pipe();
    let now = 1_700_000_000_000u64;
    for i in from..to {
        match family {
            "bullmq-mail-jobs" | "bullmq-reports-jobs" => {
                let queue = if family == "bullmq-mail-jobs" {
                    "mail"
                } else {
                    "reports"
                };
                let key = format!("bull:{queue}:{}", i + 1);
                pipe.cmd("HSET")
                    .arg(&key)
                    .arg("name")
                    .arg("job")
                    .arg("data")
                    .arg(format!(
                        "{{\"payload\":\"{}\"}}",
                        text(i, 900 + (i % 250) as usize)
                    ))
                    .arg("opts")
                    .arg("{\"attempts\":3}")
                    .arg("timestamp")
                    .arg(now + i)
                    .arg("delay")
                    .arg(0)
                    .arg("priority")
                    .arg(0)
                    .arg("atm")
                    .arg(1)
                    .ignore();
                // What BullMQ adds when a job finishes: a return value, or
                // the reason and stack trace of a failure.
                let failed = queue == "reports" && i % 5 == 0 && i % 15 != 0;
                if i % 15 != 0 {
                    pipe.cmd("HSET")
                        .arg(&key)
                        .arg("processedOn")
                        .arg(now + i + 5)
                        .arg("finishedOn")
                        .arg(now + i + 10)
                        .ignore();
                    if failed {
                        pipe.cmd("HSET")
                            .arg(&key)
                            .arg("failedReason")
                            .arg("report renderer timed out")
                            .arg("stacktrace")
                            .arg(format!("[\"Error: timed out\\n{}\"]", text(i, 400)))
                            .ignore();
                    } else {
                        pipe.cmd("HSET")
                            .arg(&key)
                            .arg("returnvalue")
                            .arg(format!("{{\"sent\":true,\"id\":\"{}\"}}", text(i, 24)))
                            .ignore();
                    }
                }
                if i % 15 == 0 {
                    pipe.cmd("LPUSH")
                        .arg(format!("bull:{queue}:wait"))
                        .arg(i + 1)
                        .ignore();
                } else if queue == "reports" && i % 5 == 0 {
                    pipe.cmd("ZADD")
                        .arg(format!("bull:{queue}:failed"))
                        .arg(now + i)
                        .arg(i + 1)
                        .ignore();
                } else {
                    pipe.cmd("ZADD")
                        .arg(format!("bull:{queue}:completed"))
                        .arg(now + i)
                        .arg(i + 1)
                        .ignore();
                }
            }
            "bullmq-mail-logs" => {
                pipe.cmd("RPUSH")
                    .arg(format!("bull:mail:{}:logs", i * 10 + 1))
                    .arg(text(i, 80))
                    .arg(text(i + 1, 80))
                    .ignore();
            }
            "sidekiq" => {
                match i {
                    0 => {
                        for j in 0..50_000u64 {
                            pipe.cmd("LPUSH").arg("queue:default").arg(format!("{{\"class\":\"HardWorker\",\"args\":[{j}],\"jid\":\"{:024x}\"}}", j)).ignore();
                        }
                    }
                    1 => {
                        for j in 0..20_000u64 {
                            pipe.cmd("ZADD").arg("dead").arg(1_700_000_000 + j).arg(format!("{{\"class\":\"HardWorker\",\"args\":[{j}],\"error_message\":\"boom\",\"jid\":\"{:024x}\"}}", j)).ignore();
                        }
                    }
                    2 => {
                        pipe.cmd("SADD").arg("queues").arg("default").ignore();
                    }
                    3 => {
                        pipe.cmd("ZADD").arg("retry").arg(1).arg("{}").ignore();
                    }
                    _ => {
                        pipe.cmd("SET")
                            .arg(format!(
                                "stat:processed:2024-{:02}-{:02}",
                                1 + (i / 28) % 12,
                                1 + i % 28
                            ))
                            .arg(i)
                            .ignore();
                    }
                }
            }
            "celery-results" => {
                pipe.cmd("SET")
                    .arg(format!("celery-task-meta-{}", uuid(i)))
                    .arg(format!(
                        "{{\"status\":\"SUCCESS\",\"result\":\"{}\"}}",
                        text(i, 60)
                    ))
                    .arg("EX")
                    .arg(86_400)
                    .ignore();
            }
            "rq-jobs" => {
                pipe.cmd("HSET")
                    .arg(format!("rq:job:{}", uuid(1_000_000 + i)))
                    .arg("status")
                    .arg("finished")
                    .arg("origin")
                    .arg("default")
                    .arg("data")
                    .arg(text(i, 250))
                    .ignore();
            }
            "rq-results" => {
                pipe.cmd("XADD")
                    .arg(format!("rq:results:{}", uuid(1_000_000 + i)))
                    .arg("*")
                    .arg("type")
                    .arg(1)
                    .arg("return_value")
                    .arg(text(i, 40))
                    .ignore();
            }
            "sessions" => {
                pipe.cmd("SET")
                    .arg(format!("session:{}", uuid(2_000_000 + i)))
                    .arg(text(i, 150 + (i % 100) as usize))
                    .arg("EX")
                    .arg(3600)
                    .ignore();
            }
            "user-profiles" => {
                pipe.cmd("HSET")
                    .arg(format!("user:{i}:profile"))
                    .arg("name")
                    .arg(text(i, 12))
                    .arg("email")
                    .arg(format!("u{i}@example.com"))
                    .arg("bio")
                    .arg(text(i, 60))
                    .ignore();
            }
            "user-carts" => {
                for j in 0..(1 + i % 6) {
                    pipe.cmd("RPUSH")
                        .arg(format!("user:{i}:cart"))
                        .arg(format!("sku-{j}"))
                        .ignore();
                }
            }
            "leaderboards" => {
                for j in 0..100u64 {
                    pipe.cmd("ZADD")
                        .arg(format!("leaderboard:{i}"))
                        .arg(j)
                        .arg(format!("player{j}"))
                        .ignore();
                }
            }
            "page-cache" => {
                pipe.cmd("SET")
                    .arg(format!("cache:page:{i:032x}"))
                    .arg(text(i, 200 + (i % 1500) as usize))
                    .arg("EX")
                    .arg(7200)
                    .ignore();
            }
            "rate-limits" => {
                pipe.cmd("SET")
                    .arg(format!("ratelimit:{i}"))
                    .arg(i % 100)
                    // An hour, not the minute of a real limiter: keys that
                    // expire between the report and the exact pass after it
                    // would read as the report's error (+91% at 60 s).
                    .arg("EX")
                    .arg(3600)
                    .ignore();
            }
            "big-hashes" => {
                for j in 0..40_000u64 {
                    pipe.cmd("HSET")
                        .arg(format!("catalog:{i}:items"))
                        .arg(format!("sku-{j}"))
                        .arg(text(i + j, 20 + (j % 9) as usize * 40))
                        .ignore();
                }
            }
            "big-zsets" => {
                for j in 0..15_000u64 {
                    pipe.cmd("ZADD")
                        .arg(format!("ranking:{i}:scores"))
                        .arg(j)
                        .arg(format!("player-{j}-{}", text(j, (j % 5) as usize * 10)))
                        .ignore();
                }
            }
            "big-streams" => {
                for j in 0..20_000u64 {
                    pipe.cmd("XADD")
                        .arg(format!("audit:{i}:log"))
                        .arg("*")
                        .arg("who")
                        .arg(j % 977)
                        .arg("what")
                        .arg(text(j, 40 + (j % 3) as usize * 30))
                        .ignore();
                }
            }
            "event-streams" => {
                for j in 0..1000u64 {
                    pipe.cmd("XADD")
                        .arg(format!("events:2024-01-{:02}", i + 1))
                        .arg("*")
                        .arg("n")
                        .arg(j)
                        .arg("what")
                        .arg(text(j, 30))
                        .ignore();
                }
            }
            "orders" => {
                pipe.cmd("HSET")
                    .arg(format!("order:{}:details", 5_000_000 + i))
                    .arg("total")
                    .arg(i % 1000)
                    .arg("items")
                    .arg(text(i, 120))
                    .ignore();
            }
            "tokens" => {
                pipe.cmd("SET")
                    .arg(format!(
                        "token:{:040x}",
                        i.wrapping_mul(0x9E37_79B9_7F4A_7C15)
                    ))
                    .arg(text(i, 64))
                    .ignore();
            }
            "notifications" => {
                for j in 0..3u64 {
                    pipe.cmd("LPUSH")
                        .arg(format!("notifications:{i}"))
                        .arg(text(i + j, 90))
                        .ignore();
                }
            }
            "apalis" => {
                let ns = "email_service::Email";
                if i == 0 {
                    for j in 0..10_000u64 {
                        pipe.cmd("HSET")
                            .arg(format!("{ns}:data"))
                            .arg(format!("01HQZ8M9Z5X3K7V2B4N6P8{j:05}"))
                            .arg(text(j, 200))
                            .ignore();
                    }
                } else {
                    for j in 0..10_000u64 {
                        pipe.cmd("ZADD")
                            .arg(format!("{ns}:done"))
                            .arg(j)
                            .arg(format!("01HQZ8M9Z5X3K7V2B4N6P8{j:05}"))
                            .ignore();
                    }
                }
            }
            "celery-broker" => match i {
                0 => {
                    for j in 0..5_000u64 {
                        pipe.cmd("LPUSH")
                            .arg("celery")
                            .arg(format!(
                                "{{\"body\":\"{}\",\"headers\":{{\"id\":\"{}\"}}}}",
                                text(j, 100),
                                uuid(j)
                            ))
                            .ignore();
                    }
                }
                _ => {
                    pipe.cmd("SADD")
                        .arg(format!("_kombu.binding.q{i}"))
                        .arg("celery\x06\x16\x06\x16celery")
                        .ignore();
                }
            },
            _ => {}
        }
    }
    placement.send(nodes, &pipe).await
}
