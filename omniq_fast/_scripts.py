"""The one registry of our Lua scripts (``omniq_fast/lua/*.lua``).

Each script (``_lib.lua``, the shared prelude, the ``_*.lua`` libraries the script includes,
then the script's own file) is read once per process and addressed by its SHA1; clients run it with EVALSHA
and load it with SCRIPT LOAD only when the server answers NOSCRIPT (first use, or after a
SCRIPT FLUSH or a server restart).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Optional, Union

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
    # local function on every call, so scripts include only the libraries they use, and
    # of those only the functions they call (_used_code).
    libraries = [lua.joinpath("_lib.lua").read_bytes()]
    for line in body.splitlines():
        if not line.startswith(b"--@include "):
            break
        libraries.append(lua.joinpath(line.split()[1].decode() + ".lua").read_bytes())
    source = b"\n".join([*_used_code(libraries, body), body])
    return Script(name, source, hashlib.sha1(source).hexdigest().encode("ascii"))


#: The first line of a library's top-level function (a one-liner ends on it, any other at
#: the next line that is ``end`` alone: the libraries' layout, which the tests hold).
_FUNCTION_START = re.compile(rb"local function (\w+)\b")
#: The first line of a top-level constant (``local K_WAIT = BASE .. ":wait"``): it ends
#: where its brackets close. The libraries' constants are pure (no redis.call), so one no
#: script reads can go.
_CONSTANT_START = re.compile(rb"local (\w+) = ")


def _depth(line: bytes) -> int:
    return sum(line.count(c) for c in b"{([") - sum(line.count(c) for c in b"})]")


def _chunks(library: bytes) -> list[tuple[Optional[bytes], bytes]]:
    """``library`` cut into its top-level functions and constants (their name, and their
    text with the comment lines right above them) and the code between them (name None),
    in order."""
    chunks: list[tuple[Optional[bytes], bytes]] = []
    pending: list[bytes] = []  # comment lines that may introduce the next definition
    lines = iter(library.splitlines(keepends=True))
    for line in lines:
        function = _FUNCTION_START.match(line)
        start = function or _CONSTANT_START.match(line)
        if start is None:
            if line.startswith(b"--"):
                pending.append(line)
            else:
                chunks.append((None, b"".join(pending) + line))
                pending = []
            continue
        text = pending + [line]
        pending = []
        if function is not None:
            if not line.rstrip().endswith(b" end"):
                for inner in lines:
                    text.append(inner)
                    if inner.rstrip() == b"end":
                        break
        else:
            depth = _depth(line)
            while depth > 0:
                inner = next(lines)
                text.append(inner)
                depth += _depth(inner)
        chunks.append((start.group(1), b"".join(text)))
    chunks.append((None, b"".join(pending)))
    return chunks


def _used_code(libraries: list[bytes], body: bytes) -> list[bytes]:
    """The libraries without the top-level functions and constants the script never uses
    (directly or through a function it calls): Lua makes a closure for every local function
    of a script on every call (35 ns to over 100 ns each, measured in Redis, more with
    upvalues) and evaluates every constant, and the prelude holds more than most scripts
    use. A name that only a comment mentions keeps its definition: harmless."""
    # Each library ends its last line, so that joined they stay apart.
    chunks = [chunk for library in libraries for chunk in _chunks(library.rstrip(b"\n") + b"\n")]
    while True:
        kept = b"".join(text for _, text in chunks) + body
        unused = [
            i for i, (name, text) in enumerate(chunks)
            if name is not None
            and len(re.findall(rb"\b%s\b" % name, kept)) == len(re.findall(rb"\b%s\b" % name, text))
        ]  # fmt: skip
        if not unused:
            return [b"".join(text for _, text in chunks)]
        chunks = [chunk for i, chunk in enumerate(chunks) if i not in unused]


def evalsha_head(sha: bytes, anchor: str) -> tuple[Arg, ...]:
    """``EVALSHA sha 1 anchor``, the arguments every call of a script starts with (its
    ARGV follow), laid out in this one place: every script declares one key, its anchor
    (the key a cluster routes it by). Used by the single calls, the coalesced publishes and
    both cores' batch encoders. A head to extend (``head + argv``) rather than a function
    of the ARGV too: packing them again would cost a single publish ~100 ns more."""
    return (b"EVALSHA", sha, b"1", anchor)
