// The queue workloads of shared/BENCH.md on BullMQ, for comparison with
// `plimsoll bench`. Same payload, same Redis set-up (the caller starts a
// private redis-server: --save "" --appendonly no --maxmemory 0), flushed
// before each repetition, medians of the repetitions, one JSON line per
// workload.
//
// Usage: node bench.mjs --redis redis://127.0.0.1:PORT/ [--workload W1-single,...] [--n 100000] [--reps 3]
// BullMQ's defaults are used throughout: in particular it keeps completed jobs.

import { readFileSync } from 'node:fs';
import { Queue, Worker } from 'bullmq';
import IORedis from 'ioredis';

const args = Object.fromEntries(
  process.argv.slice(2).reduce((pairs, arg, i, all) => {
    if (arg.startsWith('--')) pairs.push([arg.slice(2), all[i + 1]]);
    return pairs;
  }, []),
);
const url = args.redis ?? 'redis://127.0.0.1:6379/';
const workloads = (args.workload ?? 'W1-single,W1-bulk,W2-drain,W3-waiting,W3-retained,W4-latency').split(',');
const N = Number(args.n ?? 100000);
const reps = Number(args.reps ?? 3);
const concurrency = Number(args.concurrency ?? 50);
const rate = Number(args.rate ?? 2000);
const seconds = Number(args.seconds ?? 20);
const body = readFileSync(new URL('../payload_body.txt', import.meta.url), 'utf8');
const QUEUE = 'bench';

const payload = (seq, ts) => ({
  ts,
  seq,
  issue: { id: seq, repo: 'acme/widgets', title: 'Crash when opening settings panel on startup', labels: ['bug', 'triage'], body },
});

const connection = () => new IORedis(url, { maxRetriesPerRequest: null });
const admin = connection();

async function info(section) {
  const text = await admin.info(section);
  return Object.fromEntries(text.split('\r\n').filter((l) => l && !l.startsWith('#')).map((l) => l.split(':')));
}
const usedMemory = async () => Number((await info('memory')).used_memory);
const redisCpu = async () => {
  const cpu = await info('cpu');
  return Number(cpu.used_cpu_user) + Number(cpu.used_cpu_sys);
};
const clientCpu = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
};
async function reset() {
  await admin.flushall();
  await admin.script('FLUSH');
  return usedMemory();
}
async function meter() {
  const start = { client: clientCpu(), redis: await redisCpu(), t: performance.now() };
  return async () => {
    const wall = (performance.now() - start.t) / 1000;
    return {
      wall,
      cpu_client_pct: ((clientCpu() - start.client) / wall) * 100,
      cpu_redis_pct: (((await redisCpu()) - start.redis) / wall) * 100,
    };
  };
}

async function pool(n, inFlight, task) {
  let next = 0;
  const runners = Array.from({ length: inFlight }, async () => {
    while (next < n) {
      const i = next++;
      await task(i);
    }
  });
  await Promise.all(runners);
}

async function addBulk(queue, first, n) {
  for (let seq = first; seq < first + n; seq += 1000) {
    const ts = Date.now();
    const jobs = [];
    for (let i = seq; i < Math.min(seq + 1000, first + n); i++) jobs.push({ name: 'job', data: payload(i, ts) });
    await queue.addBulk(jobs);
  }
}

async function drain(queue, n) {
  let done = 0;
  let resolve;
  const finished = new Promise((r) => (resolve = r));
  const worker = new Worker(QUEUE, async () => {}, { connection: connection(), concurrency });
  worker.on('completed', () => {
    if (++done === n) resolve();
  });
  await finished;
  return worker;
}

async function run(workload) {
  const empty = await reset();
  const queue = new Queue(QUEUE, { connection: connection() });
  await queue.waitUntilReady();
  const figures = {};
  if (['W1-single', 'W1-bulk', 'W3-waiting'].includes(workload)) {
    const stop = await meter();
    if (workload === 'W1-single') {
      await pool(N, concurrency, (seq) => queue.add('job', payload(seq, Date.now())));
    } else {
      await addBulk(queue, 0, N);
    }
    const m = await stop();
    const bytes = ((await usedMemory()) - empty) / N;
    if (workload === 'W3-waiting') figures.bytes_per_job = bytes;
    else Object.assign(figures, { jobs_per_s: N / m.wall, cpu_client_pct: m.cpu_client_pct, cpu_redis_pct: m.cpu_redis_pct, bytes_per_waiting_job: bytes });
  } else if (['W2-drain', 'W3-retained'].includes(workload)) {
    await addBulk(queue, 0, N);
    const stop = await meter();
    const worker = await drain(queue, N);
    const m = await stop();
    await worker.close();
    const bytes = ((await usedMemory()) - empty) / N;
    if (workload === 'W3-retained') figures.bytes_per_job = bytes;
    else Object.assign(figures, { jobs_per_s: N / m.wall, cpu_worker_pct: m.cpu_client_pct, cpu_redis_pct: m.cpu_redis_pct });
  } else if (workload === 'W4-latency') {
    const latencies = [];
    const total = rate * seconds;
    const worker = new Worker(
      QUEUE,
      async (job) => {
        latencies.push(Date.now() - job.data.ts);
      },
      { connection: connection(), concurrency },
    );
    await worker.waitUntilReady();
    await new Promise((r) => setTimeout(r, 200));
    const start = performance.now();
    const adds = [];
    for (let seq = 0; seq < total; seq++) {
      const due = start + (seq * 1000) / rate;
      const wait = due - performance.now();
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
      adds.push(queue.add('job', payload(seq, Date.now())));
    }
    const producedIn = (performance.now() - start) / 1000;
    await Promise.all(adds);
    while (latencies.length < total) await new Promise((r) => setTimeout(r, 5));
    await worker.close();
    latencies.sort((a, b) => a - b);
    const q = (p) => latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))];
    Object.assign(figures, { p50_ms: q(0.5), p99_ms: q(0.99), max_ms: latencies[latencies.length - 1], achieved_rate: total / producedIn });
  } else {
    throw new Error(`unknown workload ${workload}`);
  }
  await queue.close();
  return figures;
}

const median = (values) => {
  const s = [...values].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};

const redisVersion = (await info('server')).redis_version;
for (const workload of workloads) {
  const all = [];
  for (let r = 0; r < reps; r++) all.push(await run(workload));
  const line = { queue: 'bullmq', bullmq_version: '6.7.0', workload, n: workload === 'W4-latency' ? rate * seconds : N, reps, redis_version: redisVersion };
  for (const key of Object.keys(all[0])) {
    const v = median(all.map((f) => f[key]));
    line[key] = Math.abs(v) >= 100 ? Math.round(v) : Math.round(v * 1000) / 1000;
  }
  console.log(JSON.stringify(line));
}
await admin.quit();
process.exit(0);
