"""Bulk-import a CSV file as jobs, with a progress bar:

    python csv_import.py users.csv [--queue imports]

Each row becomes one job whose id comes from the row's ``id`` column, so running the same
import twice queues nothing twice: publish is idempotent by job id, and the ids already
there come back as ``DuplicateJobs``.
"""

import argparse
import csv
import itertools
import os
from typing import Iterator, Optional, Sequence

from rich.progress import Progress

from omniq_fast import Client, DuplicateJobs, Job

REDIS_URL = os.environ.get("REDIS_URL", "redis://localhost:6379/0")
CHUNK = 2000  # rows per publish_many call: one progress step (it pipelines 500 per script call)


def read_jobs(path: str) -> Iterator[Job]:
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            yield Job(row, job_id=f"user-{row['id']}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv_file")
    parser.add_argument("--queue", default="imports")
    args = parser.parse_args(argv)

    with open(args.csv_file, newline="", encoding="utf-8") as f:
        total = sum(1 for _ in csv.DictReader(f))
    new = skipped = 0
    jobs = read_jobs(args.csv_file)
    with Client(REDIS_URL) as client, Progress() as progress:
        bar = progress.add_task(f"importing into {args.queue}", total=total)
        while chunk := list(itertools.islice(jobs, CHUNK)):
            try:
                new += len(client.publish_many(args.queue, chunk, max_attempts=5))
            except DuplicateJobs as exc:  # everything else was written
                skipped += len(exc.duplicates)
                new += len(exc.written)
            progress.advance(bar, len(chunk))
    print(f"imported {new} new jobs, {skipped} already queued")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
