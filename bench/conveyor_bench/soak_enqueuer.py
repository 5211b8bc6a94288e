"""The soak's enqueuer, run as its own process (``python -m
conveyor_bench.soak_enqueuer URL RATE SECONDS OUTFILE``): enqueues no-op jobs
numbered 1, 2, ... at a steady RATE per second for SECONDS, every 10 ms the
jobs due by then in one ``enqueue_many`` call, and writes a line
``first last committed_at`` per call to OUTFILE."""

from __future__ import annotations

import sys
import time

import psycopg
from psycopg.types.json import Jsonb

TICK = 0.010


def main(url: str, rate: float, seconds: float, outfile: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn, open(outfile, "w") as out:
        start = time.monotonic()
        sent = 0
        while True:
            elapsed = time.monotonic() - start
            if elapsed >= seconds:
                break
            due = min(int(elapsed * rate), int(seconds * rate))
            if due > sent:
                jobs = [{"job_class": "BenchNoOp", "args": [s]} for s in range(sent + 1, due + 1)]
                conn.execute("SELECT count(*) FROM conveyor.enqueue_many(%s)", [Jsonb(jobs)])
                out.write(f"{sent + 1} {due} {time.time():.6f}\n")
                sent = due
            time.sleep(max(0.0, TICK - (time.monotonic() - start - elapsed)))


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4])
