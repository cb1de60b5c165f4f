"""Cluster scaling: the same workloads on a 1-master and a 3-master Redis Cluster, one run.

    python benchmarks/cluster.py [--jobs 120000] [--consume-jobs 24000] [--processes 2]
                                 [--concurrency 1] [--repeat 3] [--json out.json] [-v]

What it measures. Two throwaway clusters on loopback (``EmbeddedCluster``: one valkey
process per master, no replicas, started by this script and killed at its end) get the
same work, round after round, one cluster then the other, so that drift on the machine
hits both alike:

* **publish** — ``publish_many_queues`` of ``--jobs`` small jobs spread evenly over 12
  queues: one pipelined stream per master, the masters fed in parallel (one thread each).
* **consume (1 proc)** — ``--consume-jobs`` jobs pre-published over the 12 queues, drained
  by this process: ``client.consume(queues, no-op, max_jobs=<per queue>)``, one consumer
  thread per queue, each talking to its queue's master.
* **consume (K procs)** — with ``--processes K`` (default 2; 0 skips it): the same drain
  by K processes, each consuming all 12 queues with ``max_jobs`` = its share of each
  queue (one Python process is held to about one core by the GIL; K of them are not).
  Starting the processes is not timed.

The consumers run with ``wake=False`` unless ``--wake``: the queues are full before they
start, so the wake channel has nothing to tell them, and closing each listener (it reads
with a 0.1 s timeout) would add its wait to rounds that last well under a second.
``max_jobs`` stops each consumer exactly when its share is done.

The 12 queue names are chosen so that each master of the 3-master cluster owns 4 of
them; the 1-master cluster gets the same names. Every round starts from an empty
keyspace and waits (up to ``--settle`` s) for the machine to be idle. Other processes
(a test suite next door) skew a round, so the CPU they used during it is measured: a row
is the median, by jobs/s, of the "quiet" rounds (other processes under 15% of a core),
else the least disturbed one; after ``--repeat`` rounds, a workload with no quiet round
on a cluster gets more rounds while the time lasts (``--budget``). Linux only
(``/proc/stat``).

Why: a cluster spreads the queues' server work over several server processes, so the
question is how far throughput follows the number of masters, and what stops it. The
reference machine has 2 cores, shared by every master *and* the client, so adding masters
there adds server processes but no CPU. The report therefore also says where CPU goes:

* **client CPU µs/job** — ``process_time`` of this process (all its threads), plus the
  consumer processes' own ``process_time`` for ``consume (K procs)``;
* **server CPU µs/job** — the sum over masters of their ``INFO cpu`` (``used_cpu_user +
  used_cpu_sys``) deltas, per job;
* **busiest master %** — the busiest master's CPU over wall time (100% = one full core);
* **other CPU %** — what the rest of the machine used meanwhile (``/proc/stat`` minus the
  two above), in % of one core.

How to read it. A 1-master row with the master near 100% is server-bound: one Valkey
thread is the limit, which is what more masters lift. In a 3-master row, ``CPU used``
(client + server CPU over wall time, in cores; in the projection table) near the number
of cores means the machine is the limit, and the 3/1 ratio then says more about the
machine than about the cluster. The projection answers what the machine cannot: a master
with a core of its own runs ``1e6 / server µs/job`` jobs/s (each job runs on one master),
so N masters N times that, if the clients keep up; the client cores that takes, and what
the row's own client processes could sustain, are printed next to it, with the
assumptions.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import queue
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Optional, Sequence

import redis

import omniq_fast
from omniq_fast import Client
from omniq_fast.testing import ClusterNode, EmbeddedCluster
from omniq_fast.keys import queue_base

QUEUES = 12
SPREAD_OVER = 3  # the names are spread evenly over the masters of the larger cluster
QUIET_CORES = 0.15  # a round is "quiet" when other processes used less CPU than this


# --------------------------------------------------------------------------- measuring


def node_cpu(node: ClusterNode) -> float:
    """CPU seconds the node's server process has used (``INFO cpu``)."""
    with redis.Redis(host=node.host, port=node.port) as r:
        info = r.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def machine_cpu() -> float:
    """CPU seconds every process of the machine has used (``/proc/stat``, all cores)."""
    with open("/proc/stat") as fh:
        fields = fh.readline().split()[1:]
    # user nice system idle iowait irq softirq steal: everything but idle and iowait.
    busy = sum(int(v) for i, v in enumerate(fields[:8]) if i not in (3, 4))
    return busy / os.sysconf("SC_CLK_TCK")


def wait_quiet(max_wait_s: float) -> float:
    """Wait (up to ``max_wait_s``) until the machine's CPU use drops below ``QUIET_CORES``
    over a 0.2 s window, so a neighbour's burst does not land in a round. Returns the last
    reading, in cores."""
    deadline = time.monotonic() + max_wait_s
    while True:
        m0, t0 = machine_cpu(), time.monotonic()
        time.sleep(0.2)
        busy = (machine_cpu() - m0) / (time.monotonic() - t0)
        if busy < QUIET_CORES or time.monotonic() >= deadline:
            return busy


@dataclass
class Sample:
    """One measured round of one workload on one cluster."""

    masters: int
    workload: str
    jobs: int
    wall_s: float
    client_cpu_s: float
    server_cpu_s: list[float]  # per master, in the cluster's order
    machine_cpu_s: float
    client_processes: int = 1

    @property
    def jobs_per_s(self) -> float:
        return self.jobs / self.wall_s

    @property
    def client_us_per_job(self) -> float:
        return self.client_cpu_s / self.jobs * 1e6

    @property
    def server_us_per_job(self) -> float:
        return sum(self.server_cpu_s) / self.jobs * 1e6

    @property
    def busiest_master(self) -> float:
        """The busiest master's CPU over wall time (1.0 = one full core)."""
        return max(self.server_cpu_s) / self.wall_s

    @property
    def cores_used(self) -> float:
        """Client and server CPU over wall time, in cores."""
        return (self.client_cpu_s + sum(self.server_cpu_s)) / self.wall_s

    @property
    def other_cores(self) -> float:
        """CPU the rest of the machine used meanwhile, in cores."""
        ours = self.client_cpu_s + sum(self.server_cpu_s)
        return max(0.0, self.machine_cpu_s - ours) / self.wall_s

    def as_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "jobs_per_s": round(self.jobs_per_s),
            "client_cpu_us_per_job": round(self.client_us_per_job, 2),
            "server_cpu_us_per_job": round(self.server_us_per_job, 2),
            "busiest_master": round(self.busiest_master, 3),
            "cores_used": round(self.cores_used, 3),
            "other_cores": round(self.other_cores, 3),
        }


# --------------------------------------------------------------------------- setup


def spread_queue_names(cluster: EmbeddedCluster, count: int) -> list[str]:
    """``count`` queue names, the same number on each master of ``cluster``."""
    masters = cluster.masters()
    per_master = count // len(masters)
    if per_master * len(masters) != count:
        raise ValueError(f"{count} queues do not split evenly over {len(masters)} masters")
    taken: dict[str, list[str]] = {m.node_id: [] for m in masters}
    i = 0
    while any(len(names) < per_master for names in taken.values()):
        name = f"bench-{i}"
        i += 1
        owner = cluster.owner_of_slot(cluster.slot_of(queue_base(name))).node_id
        if len(taken[owner]) < per_master:
            taken[owner].append(name)
    return [name for names in taken.values() for name in names]


def wipe(cluster: EmbeddedCluster) -> None:
    """Empty the private cluster between rounds (never pointed at a shared server: the
    nodes are the ones this process started). Scripts stay cached."""
    for node in cluster.masters():
        with redis.Redis(host=node.host, port=node.port) as r:
            r.flushall()


def payload(i: int) -> dict[str, Any]:
    return {"i": i, "kind": "bench", "tags": ["a", "b"]}


def jobs_by_queue(queues: Sequence[str], per_queue: int) -> dict[str, Any]:
    return {q: (payload(i) for i in range(per_queue)) for q in queues}


def noop(ctx: Any) -> None:
    return None


# --------------------------------------------------------------------------- workloads


def _consumer_process(
    url: str,
    queues: list[str],
    per_queue: int,
    concurrency: int,
    wake: bool,
    ready: Any,
    go: Any,
    results: Any,
) -> None:
    """One consumer process: ``per_queue`` jobs of each of ``queues`` from ``go`` on, then
    reports its CPU seconds and the jobs it completed."""
    from omniq_fast.multiqueue import MultiConsumer

    with Client(url) as client:
        consumer = MultiConsumer(client, queues, noop, max_jobs=per_queue, wake=wake,
                                 concurrency=concurrency, stop_on_ctrl_c=False)  # fmt: skip
        ready.release()
        go.wait()
        c0 = time.process_time()
        stats = consumer.run()
        results.put((time.process_time() - c0, stats.succeeded))


@dataclass
class Bench:
    """The workloads, on one cluster, through one client."""

    cluster: EmbeddedCluster
    client: Client
    queues: list[str]
    settle_s: float
    wake: bool  # consumers listen on the wake channels (see --wake)

    def measure(
        self,
        workload: str,
        jobs: int,
        work: Callable[[], Optional[float]],
        processes: int = 1,
    ) -> Sample:
        """Run ``work``; it may return CPU seconds used by its ``processes`` (counted as the
        client's)."""
        nodes = self.cluster.masters()
        wait_quiet(self.settle_s)
        s0 = [node_cpu(n) for n in nodes]
        m0, c0, t0 = machine_cpu(), time.process_time(), time.perf_counter()
        helpers = work() or 0.0
        wall = time.perf_counter() - t0
        client = time.process_time() - c0 + helpers
        m1 = machine_cpu()
        server = [b - a for a, b in zip(s0, (node_cpu(n) for n in nodes))]
        return Sample(len(nodes), workload, jobs, wall, client, server, m1 - m0, processes)

    def publish(self, jobs: int) -> Sample:
        per_queue = jobs // len(self.queues)
        batches = jobs_by_queue(self.queues, per_queue)

        def work() -> None:
            self.client.publish_many_queues(batches)

        return self.measure("publish", per_queue * len(self.queues), work)

    def consume(self, jobs: int, concurrency: int) -> Sample:
        # max_jobs per queue: each queue's consumer stops once it has its queue's jobs.
        per_queue = jobs // len(self.queues)
        total = per_queue * len(self.queues)
        self.client.publish_many_queues(jobs_by_queue(self.queues, per_queue))

        def work() -> None:
            stats = self.client.consume(self.queues, noop, max_jobs=per_queue, wake=self.wake,
                                        concurrency=concurrency, stop_on_ctrl_c=False)  # fmt: skip
            if stats.succeeded != total:
                raise RuntimeError(f"consumed {stats.succeeded} jobs, expected {total}")

        return self.measure(f"consume (1 proc, conc {concurrency})", total, work)

    def consume_processes(self, jobs: int, processes: int, concurrency: int) -> Sample:
        # Each process takes an equal share of every queue (max_jobs): the shares add up to
        # what is queued, so every process ends by itself once the queues are drained.
        share = jobs // len(self.queues) // processes
        total = share * processes * len(self.queues)
        self.client.publish_many_queues(jobs_by_queue(self.queues, share * processes))
        ctx = mp.get_context("spawn")  # fresh interpreters: no client or thread inherited
        ready, go, results = ctx.Semaphore(0), ctx.Event(), ctx.Queue()
        args = (self.cluster.url, self.queues, share, concurrency, self.wake, ready, go, results)
        procs = [ctx.Process(target=_consumer_process, args=args) for _ in range(processes)]
        for p in procs:
            p.start()
        try:
            for _ in procs:  # started, connected, constructed: only the consuming is timed
                if not ready.acquire(timeout=60):
                    raise RuntimeError("a consumer process did not start")

            def work() -> float:
                go.set()
                got: list[tuple[float, int]] = []
                while len(got) < len(procs):
                    try:
                        got.append(results.get(timeout=0.2))
                    except queue.Empty:
                        if any(p.exitcode for p in procs):  # died: a traceback is above
                            raise RuntimeError("a consumer process failed") from None
                done = sum(n for _, n in got)
                if done != total:
                    raise RuntimeError(f"consumed {done} jobs, expected {total}")
                return float(sum(cpu for cpu, _ in got))

            workload = f"consume ({processes} procs, conc {concurrency})"
            return self.measure(workload, total, work, processes)
        finally:
            for p in procs:
                p.join(timeout=10)
                if p.is_alive():
                    p.kill()


# --------------------------------------------------------------------------- report


def pick(samples: list[Sample]) -> tuple[Sample, int]:
    """The row of one workload: the median (by jobs/s) of its quiet rounds (other processes
    under ``QUIET_CORES``), else the round the neighbours disturbed least. A whole round is
    kept, so its CPU numbers stay consistent with its rate. Also returns the quiet count."""
    quiet = [s for s in samples if s.other_cores < QUIET_CORES]
    if not quiet:
        return min(samples, key=lambda s: s.other_cores), 0
    ranked = sorted(quiet, key=lambda s: s.jobs_per_s)
    return ranked[(len(ranked) - 1) // 2], len(quiet)


def all_quiet(samples: list[Sample]) -> bool:
    """Whether each cluster has a quiet round among ``samples`` (of one workload)."""
    masters = {s.masters for s in samples}
    return all(any(s.other_cores < QUIET_CORES for s in samples if s.masters == m) for m in masters)


def table(rows: list[Sample]) -> str:
    head = ("| masters | workload | jobs | seconds | jobs/s | client CPU µs/job"
            " | server CPU µs/job | busiest master % | other CPU % |")  # fmt: skip
    lines = [head, "|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for s in rows:
        lines.append(
            f"| {s.masters} | {s.workload} | {s.jobs:,} | {s.wall_s:.2f} | {s.jobs_per_s:,.0f}"
            f" | {s.client_us_per_job:.1f} | {s.server_us_per_job:.1f}"
            f" | {s.busiest_master:.0%} | {s.other_cores:.0%} |"
        )
    return "\n".join(lines)


def _pairs(rows: list[Sample], big: int) -> list[tuple[Sample, Sample]]:
    """(1-master row, ``big``-master row) per workload, in workload order."""
    by = {(s.masters, s.workload): s for s in rows}
    return [(by[(1, s.workload)], s) for s in rows if s.masters == big and (1, s.workload) in by]


def ratios(rows: list[Sample], samples: list[Sample], big: int) -> str:
    def rounds(masters: int, workload: str) -> str:
        mine = [s for s in samples if s.masters == masters and s.workload == workload]
        rates = sorted(s.jobs_per_s for s in mine)
        return f"{rates[0]:,.0f}–{rates[-1]:,.0f} ({pick(mine)[1]}/{len(mine)} quiet)"

    lines = [
        f"| workload | jobs/s {big} masters / 1 master | all rounds, 1 master"
        f" | all rounds, {big} masters |",
        "|---|---:|---:|---:|",
    ]
    for one, many in _pairs(rows, big):
        lines.append(f"| {many.workload} | {many.jobs_per_s / one.jobs_per_s:.2f}x"
                     f" | {rounds(1, one.workload)} | {rounds(big, many.workload)} |")  # fmt: skip
    return "\n".join(lines)


def projection(rows: list[Sample], big: int, cores: int) -> str:
    out = [
        "Projection: the same work with each master on a core (or host) of its own.",
        "",
        "- 1 master on a core = 1e6 / (server CPU µs/job of the 1-master run).",
        f"- {big} masters on own cores = {big} x 1e6 / (server CPU µs/job of the {big}-master",
        "  run): each job runs on exactly one master, so that figure is what a master spends",
        "  per job it handles (measured while oversubscribed: if anything pessimistic).",
        "- Assumes: the queues spread evenly over the masters; a master saturates at 100% of",
        "  one core (Valkey runs commands on one thread); a network as fast as loopback; and",
        "  clients on other cores: feeding the masters takes client CPU µs/job x rate",
        "  (\"client cores to feed them\"; a Python process gives about one core, the GIL's",
        "  limit, so that many processes at least).",
        "- \"client limit\": what the row's own client processes could sustain with a core",
        "  each (processes x 1e6 / client CPU µs/job); below the masters' figure, they are",
        "  the next bottleneck.",
        f"- On this machine everything shares {cores} cores: the \"box ceiling\" is"
        f" {cores} x 1e6 /",
        "  (client + server CPU µs/job), and \"CPU used\" is what the row used, in cores: near",
        f"  {cores}, the machine, not the cluster, was the limit.",
        "",
        f"| workload | server µs/job 1 / {big} m. | 1 master on a core"
        f" | {big} masters on own cores | client cores to feed them | client limit"
        f" | box ceiling ({big} m.)"
        f" | measured 1 / {big} m. | CPU used 1 / {big} m. |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for one, many in _pairs(rows, big):
        single = 1e6 / one.server_us_per_job
        servers = big * 1e6 / many.server_us_per_job
        client_cores = many.client_us_per_job * servers / 1e6
        clients = many.client_processes * 1e6 / many.client_us_per_job
        ceiling = cores * 1e6 / (many.client_us_per_job + many.server_us_per_job)
        out.append(
            f"| {many.workload} | {one.server_us_per_job:.1f} / {many.server_us_per_job:.1f}"
            f" | {single:,.0f} | {servers:,.0f} | {client_cores:.1f} | {clients:,.0f}"
            f" | {ceiling:,.0f} | {one.jobs_per_s:,.0f} / {many.jobs_per_s:,.0f}"
            f" | {one.cores_used:.2f} / {many.cores_used:.2f} |"
        )
    return "\n".join(out)


# --------------------------------------------------------------------------- main


def run(args: argparse.Namespace) -> tuple[list[Sample], list[Sample], dict[int, float]]:
    """Every round on both clusters; returns (every round, the rows, idle server CPU)."""
    started = time.monotonic()
    samples: list[Sample] = []
    idle: dict[int, float] = {}
    workloads: dict[str, Callable[[Bench], Sample]] = {
        "publish": lambda b: b.publish(args.jobs),
        "consume": lambda b: b.consume(args.consume_jobs, args.concurrency),
    }
    if args.processes:
        workloads["consume_processes"] = lambda b: b.consume_processes(
            args.consume_jobs, args.processes, args.concurrency
        )
    with EmbeddedCluster(masters=1) as one, EmbeddedCluster(masters=SPREAD_OVER) as many:
        queues = spread_queue_names(many, QUEUES)
        benches = [Bench(c, Client(c.url), queues, args.settle, args.wake) for c in (one, many)]
        try:
            for bench in benches:  # warm up: topology, script cache, connections
                bench.client.publish_many_queues(jobs_by_queue(queues, 10))
                bench.client.consume(queues, noop, max_jobs=10, stop_on_ctrl_c=False)
                wipe(bench.cluster)
                nodes = bench.cluster.masters()
                s0 = sum(node_cpu(n) for n in nodes)
                time.sleep(0.5)
                idle[len(nodes)] = (sum(node_cpu(n) for n in nodes) - s0) / 0.5
            by_kind: dict[str, list[Sample]] = {kind: [] for kind in workloads}
            round_no = 0
            while True:
                round_no += 1
                if round_no <= args.repeat:
                    kinds = list(workloads)
                else:
                    # Extra rounds, while the time lasts, for what has no quiet round yet on
                    # one of the clusters (a neighbour process was busy every time).
                    kinds = [k for k, got in by_kind.items() if not all_quiet(got)]
                    if not kinds or time.monotonic() - started > args.budget:
                        break
                for kind in kinds:
                    for bench in benches:  # alternate: drift on the machine hits both alike
                        wipe(bench.cluster)
                        sample = workloads[kind](bench)
                        by_kind[kind].append(sample)
                        samples.append(sample)
                        if args.verbose:
                            print(f"round {round_no}: {sample.masters} master(s),"
                                  f" {sample.workload}: {sample.jobs_per_s:,.0f} jobs/s,"
                                  f" other CPU {sample.other_cores:.0%}",
                                  file=sys.stderr, flush=True)  # fmt: skip
        finally:
            for bench in benches:
                bench.client.close()
    rows = []
    for masters in (1, SPREAD_OVER):
        for got in by_kind.values():
            mine = [s for s in got if s.masters == masters]
            if mine:
                rows.append(pick(mine)[0])
    return samples, rows, idle


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=120_000, help="jobs per publish round")
    parser.add_argument("--consume-jobs", type=int, default=24_000, help="jobs per consume round")
    parser.add_argument("--concurrency", type=int, default=1, help="handlers per queue")
    parser.add_argument("--processes", type=int, default=2,
                        help="also drain with K consumer processes (0: skip)")  # fmt: skip
    parser.add_argument("--repeat", type=int, default=3, help="rounds per workload (median)")
    parser.add_argument("--budget", type=float, default=55.0,
                        help="after --repeat rounds, extra rounds (for workloads without a"
                             " quiet round) until this many seconds have passed")  # fmt: skip
    parser.add_argument("--settle", type=float, default=1.0,
                        help="longest wait for an idle machine before each round")  # fmt: skip
    parser.add_argument("--wake", action="store_true",
                        help="consumers listen on wake channels (closing adds ~0.5 s)")  # fmt: skip
    parser.add_argument("--json", help="also write every round and the rows to this file")
    parser.add_argument("-v", "--verbose", action="store_true", help="print each round")
    args = parser.parse_args()
    if min(args.jobs, args.consume_jobs) < QUEUES * max(1, args.processes) or args.repeat < 1:
        parser.error(f"need at least {QUEUES} jobs per queue and process, and 1 round")

    cores = os.cpu_count() or 1
    started = time.perf_counter()
    samples, rows, idle = run(args)
    elapsed = time.perf_counter() - started

    print(f"omniq_fast {omniq_fast.__version__}, IMPLEMENTATION={omniq_fast.IMPLEMENTATION},"
          f" Python {sys.version.split()[0]}, {cores} cores; {QUEUES} queues"
          f" ({QUEUES // SPREAD_OVER} per master on {SPREAD_OVER}); {len(samples)} rounds in"
          f" {elapsed:.0f} s; a row is the median of its quiet rounds")  # fmt: skip
    print()
    print(table(rows))
    print()
    print("Each master's CPU, % of a core: " + "; ".join(
        f"{s.masters} m. {s.workload} " + "/".join(f"{c / s.wall_s:.0%}" for c in s.server_cpu_s)
        for s in rows if s.masters > 1))  # fmt: skip
    print()
    print(ratios(rows, samples, SPREAD_OVER))
    print()
    print(projection(rows, SPREAD_OVER, cores))
    print()
    print("Idle server CPU (cluster bus, cron), in cores: "
          + ", ".join(f"{m} master(s) {v:.1%}" for m, v in idle.items()))  # fmt: skip
    busy = [s for s in rows if s.other_cores >= QUIET_CORES]
    if busy:
        print("Warning: other processes used CPU during "
              + ", ".join(f"{s.masters} m. {s.workload} ({s.other_cores:.0%})" for s in busy)
              + ": those rows understate what the clusters do alone.")  # fmt: skip
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({
                "implementation": omniq_fast.IMPLEMENTATION, "cores": cores, "queues": QUEUES,
                "idle_server_cores": {str(m): v for m, v in idle.items()},
                "elapsed_s": elapsed, "args": vars(args),
                "rows": [s.as_dict() for s in rows], "rounds": [s.as_dict() for s in samples],
            }, fh, indent=2)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
