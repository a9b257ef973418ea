// Fills a Redis the way BullMQ itself does, with its default job options
// (completed and failed jobs are kept): the keyspace the memory guard is
// checked against. Jobs are added, then run by a BullMQ worker; every
// `--fail-every`-th job throws, so it ends failed.
//
// Usage: node fill.mjs --redis redis://127.0.0.1:PORT/ [--queue mail]
//          [--jobs 20000] [--fail-every 10] [--waiting 500] [--payload-bytes 1024]
// Prints one JSON line: the jobs added, completed, failed and left waiting.

import { Queue, Worker } from 'bullmq';
import IORedis from 'ioredis';

const args = Object.fromEntries(
  process.argv.slice(2).reduce((pairs, arg, i, all) => {
    if (arg.startsWith('--')) pairs.push([arg.slice(2), all[i + 1]]);
    return pairs;
  }, []),
);
const url = args.redis ?? 'redis://127.0.0.1:6379/';
const name = args.queue ?? 'mail';
const jobs = Number(args.jobs ?? 20000);
const failEvery = Number(args['fail-every'] ?? 10);
const waiting = Number(args.waiting ?? 500);
const payloadBytes = Number(args['payload-bytes'] ?? 1024);

// Random base64, so that sizes are what a real payload of this size takes.
const text = (seed, len) => {
  let x = seed * 2654435761 + 1;
  let out = '';
  const chars = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
  while (out.length < len) {
    x = (x * 1103515245 + 12345) % 2147483648;
    out += chars[Math.floor(x / 65536) % 64];
  }
  return out;
};
const connection = () => new IORedis(url, { maxRetriesPerRequest: null });
const queue = new Queue(name, { connection: connection() });

const add = async (from, to) => {
  for (let start = from; start < to; start += 500) {
    const batch = [];
    for (let i = start; i < Math.min(to, start + 500); i++) {
      batch.push({ name: 'send', data: { to: `user${i}@example.com`, body: text(i, payloadBytes - 40 - (i % 200)) } });
    }
    await queue.addBulk(batch);
  }
};

await add(0, jobs);
let done = 0;
const finished = new Promise((resolve) => {
  const worker = new Worker(
    name,
    async (job) => {
      if (Number(job.id) % failEvery === 0) throw new Error(`mailbox ${job.data.to} is full`);
      return { delivered: true, id: job.id };
    },
    { connection: connection(), concurrency: 50 },
  );
  const count = async () => {
    done += 1;
    if (done === jobs) {
      await worker.close();
      resolve();
    }
  };
  worker.on('completed', count);
  worker.on('failed', count);
});
await finished;
// Jobs left waiting: added after the worker stopped.
await add(jobs, jobs + waiting);
const counts = await queue.getJobCounts('completed', 'failed', 'waiting');
console.log(JSON.stringify({ queue: name, added: jobs + waiting, ...counts }));
await queue.close();
process.exit(0);
