//! Keys as other job queues really write them, for the guard's tests.
//!
//! Each builder writes the keys (names, types and fields) that the library
//! writes for the same state, as found in its source: BullMQ's
//! `QueueKeys.getKeys` and job hash fields, Sidekiq's `queues` / `queue:<q>`
//! / `dead` / `retry` / `stat:*`, Celery's kombu Redis transport and result
//! backend, RQ's `rq/keys.py` and registries, apalis-redis' `config.rs`.

use plimsoll::Redis;

/// 1 KiB of incompressible bytes for job `i`.
pub fn blob(i: u64, len: usize) -> Vec<u8> {
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            b'a' + (x % 26) as u8
        })
        .collect()
}

/// A UUID-shaped id for `i`.
pub fn uuid(i: u64) -> String {
    let h = i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    format!(
        "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
        (h >> 32) as u32,
        (h >> 16) as u16,
        (h & 0xfff) as u16,
        ((h >> 12) & 0xfff) as u16,
        h & 0xffff_ffff_ffff
    )
}

pub async fn run(redis: &Redis, pipe: &redis::Pipeline) -> redis::RedisResult<()> {
    let mut conn = redis.clone();
    pipe.query_async::<()>(&mut conn).await
}

/// BullMQ job states as written by its scripts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BullState {
    Completed,
    Failed,
    Waiting,
}

/// Adds BullMQ job `id` of `queue` in `state`: the job hash
/// `bull:<queue>:<id>` (name, data, opts, timestamp, …, finishedOn,
/// returnvalue / failedReason), its entry in `:completed` / `:failed`
/// (scored by finishedOn) or `:wait`, and for every tenth job a `:logs` list.
pub fn bullmq_job(pipe: &mut redis::Pipeline, queue: &str, id: u64, state: BullState, t: u64) {
    let key = format!("bull:{queue}:{id}");
    let data = format!(
        "{{\"to\":\"user{id}@example.com\",\"body\":\"{}\"}}",
        String::from_utf8(blob(id, 900)).unwrap()
    );
    pipe.cmd("HSET")
        .arg(&key)
        .arg("name")
        .arg("send-mail")
        .arg("data")
        .arg(data)
        .arg("opts")
        .arg("{\"attempts\":3,\"removeOnComplete\":false}")
        .arg("timestamp")
        .arg(t)
        .arg("delay")
        .arg(0)
        .arg("priority")
        .arg(0)
        .arg("atm")
        .arg(1)
        .ignore();
    match state {
        BullState::Completed => {
            pipe.cmd("HSET")
                .arg(&key)
                .arg("processedOn")
                .arg(t + 5)
                .arg("finishedOn")
                .arg(t + 10)
                .arg("returnvalue")
                .arg("{\"ok\":true}")
                .ignore();
            pipe.cmd("ZADD")
                .arg(format!("bull:{queue}:completed"))
                .arg(t + 10)
                .arg(id)
                .ignore();
        }
        BullState::Failed => {
            pipe.cmd("HSET")
                .arg(&key)
                .arg("processedOn")
                .arg(t + 5)
                .arg("finishedOn")
                .arg(t + 10)
                .arg("failedReason")
                .arg("SMTP 550 mailbox unavailable")
                .arg("stacktrace")
                .arg("[\"Error: SMTP 550\\n    at send (mailer.js:42:11)\"]")
                .ignore();
            pipe.cmd("ZADD")
                .arg(format!("bull:{queue}:failed"))
                .arg(t + 10)
                .arg(id)
                .ignore();
        }
        BullState::Waiting => {
            pipe.cmd("LPUSH")
                .arg(format!("bull:{queue}:wait"))
                .arg(id)
                .ignore();
        }
    }
    if id.is_multiple_of(10) {
        pipe.cmd("RPUSH")
            .arg(format!("{key}:logs"))
            .arg(format!("attempt 1 for job {id}"))
            .ignore();
    }
}

/// The per-queue keys BullMQ writes besides jobs: `:meta`, `:id`, `:events`.
pub fn bullmq_queue(pipe: &mut redis::Pipeline, queue: &str, last_id: u64) {
    pipe.cmd("HSET")
        .arg(format!("bull:{queue}:meta"))
        .arg("opts.maxLenEvents")
        .arg(10000)
        .arg("version")
        .arg("bullmq:5.12.0")
        .ignore();
    pipe.cmd("SET")
        .arg(format!("bull:{queue}:id"))
        .arg(last_id)
        .ignore();
    for i in 0..20 {
        pipe.cmd("XADD")
            .arg(format!("bull:{queue}:events"))
            .arg("MAXLEN")
            .arg("~")
            .arg(10000)
            .arg("*")
            .arg("event")
            .arg("completed")
            .arg("jobId")
            .arg(i)
            .ignore();
    }
}

/// Sidekiq: `queues`, `queue:<q>` (JSON jobs), `dead` and `retry` sorted
/// sets of JSON jobs scored by epoch seconds, `stat:processed`.
pub fn sidekiq(pipe: &mut redis::Pipeline, jobs: u64, dead: u64, now_secs: f64) {
    pipe.cmd("SADD").arg("queues").arg("default").ignore();
    let job = |i: u64| {
        format!(
            "{{\"class\":\"HardWorker\",\"args\":[{i}],\"retry\":true,\"queue\":\"default\",\"jid\":\"{:024x}\",\"created_at\":{now_secs},\"enqueued_at\":{now_secs}}}",
            i
        )
    };
    for i in 0..jobs {
        pipe.cmd("LPUSH").arg("queue:default").arg(job(i)).ignore();
    }
    for i in 0..dead {
        pipe.cmd("ZADD")
            .arg("dead")
            .arg(now_secs - (dead - i) as f64)
            .arg(job(10_000 + i))
            .ignore();
    }
    for i in 0..10 {
        pipe.cmd("ZADD")
            .arg("retry")
            .arg(now_secs + i as f64)
            .arg(job(20_000 + i))
            .ignore();
    }
    pipe.cmd("INCRBY").arg("stat:processed").arg(jobs).ignore();
    pipe.cmd("INCRBY")
        .arg("stat:processed:2024-01-05")
        .arg(jobs)
        .ignore();
}

/// Celery with the Redis broker and result backend: the `celery` list of
/// kombu messages, `celery-task-meta-<uuid>` results (with the result
/// backend's default TTL of a day), `_kombu.binding.celery`, `unacked` and
/// `unacked_index`.
pub fn celery(pipe: &mut redis::Pipeline, messages: u64, results: u64) {
    for i in 0..messages {
        pipe.cmd("LPUSH")
            .arg("celery")
            .arg(format!("{{\"body\":\"W1tdLCB7fSwgeyJjYWxsYmFja3MiOiBudWxsfV0=\",\"headers\":{{\"task\":\"tasks.add\",\"id\":\"{}\"}},\"properties\":{{\"delivery_tag\":\"{}\"}}}}", uuid(i), uuid(i + 1)))
            .ignore();
    }
    for i in 0..results {
        pipe.cmd("SET")
            .arg(format!("celery-task-meta-{}", uuid(100_000 + i)))
            .arg(format!(
                "{{\"status\":\"SUCCESS\",\"result\":{i},\"task_id\":\"{}\"}}",
                uuid(100_000 + i)
            ))
            .arg("EX")
            .arg(86_400)
            .ignore();
    }
    pipe.cmd("SADD")
        .arg("_kombu.binding.celery")
        .arg("celery\x06\x16\x06\x16celery")
        .ignore();
    pipe.cmd("HSET")
        .arg("unacked")
        .arg(uuid(7))
        .arg("[{\"body\":\"...\"},\"\",\"celery\"]")
        .ignore();
    pipe.cmd("ZADD")
        .arg("unacked_index")
        .arg(1_700_000_000)
        .arg(uuid(7))
        .ignore();
}

/// RQ: `rq:queues`, `rq:queue:default` (job ids), `rq:job:<uuid>` hashes,
/// the finished registry `rq:finished:default`, `rq:results:<id>` streams.
pub fn rq(pipe: &mut redis::Pipeline, jobs: u64) {
    pipe.cmd("SADD")
        .arg("rq:queues")
        .arg("rq:queue:default")
        .ignore();
    for i in 0..jobs {
        let id = uuid(200_000 + i);
        pipe.cmd("HSET")
            .arg(format!("rq:job:{id}"))
            .arg("status")
            .arg(if i.is_multiple_of(2) {
                "finished"
            } else {
                "queued"
            })
            .arg("origin")
            .arg("default")
            .arg("description")
            .arg(format!("tasks.count_words('https://example.com/{i}')"))
            .arg("data")
            .arg(blob(i, 200))
            .ignore();
        if i.is_multiple_of(2) {
            pipe.cmd("ZADD")
                .arg("rq:finished:default")
                .arg(1_700_000_000 + i)
                .arg(&id)
                .ignore();
            pipe.cmd("XADD")
                .arg(format!("rq:results:{id}"))
                .arg("*")
                .arg("type")
                .arg(1)
                .arg("return_value")
                .arg("gASVCAAAAAAAAABLKi4=")
                .ignore();
        } else {
            pipe.cmd("RPUSH").arg("rq:queue:default").arg(&id).ignore();
        }
    }
}

/// apalis-redis with a type-path namespace: `:data` hash of task payloads,
/// `:active` list, `:done` sorted set, `:workers`.
pub fn apalis(pipe: &mut redis::Pipeline, tasks: u64) {
    let ns = "email_service::Email";
    for i in 0..tasks {
        let id = format!("01HQZ8M9Z5X3K7V2B4N6P8{i:04}");
        pipe.cmd("HSET")
            .arg(format!("{ns}:data"))
            .arg(&id)
            .arg(blob(i, 300))
            .ignore();
        if i.is_multiple_of(2) {
            pipe.cmd("ZADD")
                .arg(format!("{ns}:done"))
                .arg(1_700_000_000 + i)
                .arg(&id)
                .ignore();
        } else {
            pipe.cmd("RPUSH")
                .arg(format!("{ns}:active"))
                .arg(&id)
                .ignore();
        }
    }
    pipe.cmd("ZADD")
        .arg(format!("{ns}:workers"))
        .arg(1_700_000_000)
        .arg("worker-1")
        .ignore();
}

/// Plain application keys: sessions with a TTL, user profile hashes
/// without one, a few config strings.
pub fn app(pipe: &mut redis::Pipeline, sessions: u64, users: u64) {
    for i in 0..sessions {
        pipe.cmd("SET")
            .arg(format!("session:{}", uuid(300_000 + i)))
            .arg(blob(i, 150))
            .arg("EX")
            .arg(3600)
            .ignore();
    }
    for i in 0..users {
        pipe.cmd("HSET")
            .arg(format!("user:{i}:profile"))
            .arg("name")
            .arg(format!("User {i}"))
            .arg("email")
            .arg(format!("user{i}@example.com"))
            .arg("bio")
            .arg(blob(i, 100))
            .ignore();
    }
    pipe.cmd("SET")
        .arg("config:feature-flags")
        .arg("{}")
        .ignore();
}
