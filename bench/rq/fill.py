"""Fills a Redis the way RQ itself does, keeping results forever
(result_ttl=-1, failure_ttl=-1: the setting that leaks), for checking the
memory guard and `plimsoll trim rq` against RQ's own view.

    pip install rq
    python3 bench/rq/fill.py --redis redis://127.0.0.1:6379/ --jobs 200 --queued 10

Enqueues the jobs, runs them with an RQ worker in burst mode (every tenth
fails), then enqueues --queued more that stay waiting; prints RQ's counts.
"""

import argparse
import os
import subprocess
import sys

from redis import Redis
from rq import Queue
from rq.registry import FailedJobRegistry, FinishedJobRegistry

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tasks  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("--redis", default="redis://127.0.0.1:6379/")
parser.add_argument("--queue", default="default")
parser.add_argument("--jobs", type=int, default=200)
parser.add_argument("--queued", type=int, default=10)
args = parser.parse_args()

redis = Redis.from_url(args.redis)
queue = Queue(args.queue, connection=redis)
for i in range(1, args.jobs + 1):
    queue.enqueue(tasks.work, i, result_ttl=-1, failure_ttl=-1)
env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.abspath(__file__)))
subprocess.run(
    ["rq", "worker", "--burst", "--url", args.redis, args.queue],
    check=True,
    env=env,
    stdout=subprocess.DEVNULL,
    stderr=subprocess.DEVNULL,
)
for i in range(args.jobs + 1, args.jobs + args.queued + 1):
    queue.enqueue(tasks.work, i)
print(
    {
        "finished": FinishedJobRegistry(queue=queue).count,
        "failed": FailedJobRegistry(queue=queue).count,
        "queued": len(queue),
    }
)
