"""The one registry of our Lua scripts (``omniq_fast/lua/*.lua``).

Each script (``_lib.lua``, the shared prelude, the ``_*.lua`` libraries the script includes,
then the script's own file) is read once per process and addressed by its SHA1; clients run it with EVALSHA
and load it with SCRIPT LOAD only when the server answers NOSCRIPT (first use, or after a
SCRIPT FLUSH or a server restart).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Union

__all__ = ["Script", "SCRIPT_NAMES", "script", "evalsha_head"]

#: What a command argument may be (as the cores encode it).
Arg = Union[bytes, str, int]

#: Every script of PROTOCOL.md §5, then our batched ones, by file name (without ``.lua``).
SCRIPT_NAMES = (
    "enqueue",
    "reserve",
    "heartbeat",
    "ack_success",
    "ack_fail",
    "promote_delayed",
    "reap_expired",
    "pause",
    "resume",
    "retry_failed",
    "retry_failed_batch",
    "remove_job",
    "remove_jobs_batch",
    "childs_init",
    "child_ack",
    "enqueue_batch",
    "reserve_batch",
    "heartbeat_batch",
    "ack_success_batch",
    "ack_fail_batch",
    "release_batch",
    "next_due",
)


@dataclass(frozen=True)
class Script:
    """A Lua script's name, source and SHA1 (as bytes, ready for EVALSHA)."""

    name: str
    source: bytes
    sha: bytes


@lru_cache(maxsize=None)
def script(name: str) -> Script:
    """The script ``name`` from ``omniq_fast/lua/``."""
    if name not in SCRIPT_NAMES:
        raise KeyError(f"unknown script {name!r}")
    lua = resources.files("omniq_fast").joinpath("lua")
    body = lua.joinpath(name + ".lua").read_bytes()
    # Each script is sent whole (EVALSHA runs one body), so shared code is prepended here
    # rather than copied into every file: the prelude always, then the libraries the
    # script names on its leading "--@include NAME" lines. Lua makes a closure for every
    # local function on every call, so scripts include only what they use.
    parts = [lua.joinpath("_lib.lua").read_bytes()]
    for line in body.splitlines():
        if not line.startswith(b"--@include "):
            break
        parts.append(lua.joinpath(line.split()[1].decode() + ".lua").read_bytes())
    parts.append(body)
    source = b"\n".join(parts)
    return Script(name, source, hashlib.sha1(source).hexdigest().encode("ascii"))


def evalsha_head(sha: bytes, anchor: str) -> tuple[Arg, ...]:
    """``EVALSHA sha 1 anchor``, the arguments every call of a script starts with (its
    ARGV follow), laid out in this one place: every script declares one key, its anchor
    (the key a cluster routes it by). Used by the single calls, the coalesced publishes and
    both cores' batch encoders. A head to extend (``head + argv``) rather than a function
    of the ARGV too: packing them again would cost a single publish ~100 ns more."""
    return (b"EVALSHA", sha, b"1", anchor)
