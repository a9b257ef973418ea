"""The jobs bench/rq/fill.py enqueues: every tenth fails."""


def work(i):
    if i % 10 == 0:
        raise ValueError(f"job {i} fails")
    return {"i": i, "pad": "x" * 500}
