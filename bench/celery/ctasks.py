"""A Celery app that keeps its results forever (result_expires=None: the
setting that leaks), for checking the memory guard and
`plimsoll trim celery results` against Celery's own view.

    pip install celery packaging
    CELERY_REDIS=redis://127.0.0.1:6379/0 python3 -c "from ctasks import work; [work.delay(i) for i in range(1, 101)]"
    CELERY_REDIS=redis://127.0.0.1:6379/0 celery -A ctasks worker --pool=solo -c 1

(run from bench/celery). Every tenth task fails.
"""

import os

from celery import Celery

redis_url = os.environ.get("CELERY_REDIS", "redis://127.0.0.1:6379/0")
app = Celery("ctasks", broker=redis_url, backend=redis_url)
app.conf.result_expires = None


@app.task
def work(i):
    if i % 10 == 0:
        raise ValueError(f"task {i} fails")
    return {"i": i, "pad": "x" * 300}
