"""Every code block of the docs (docs/**/*.md and README.md) is checked here.

A block is one of (see docs/development/index.md):

- a python block of ``--8<-- "examples/NAME.py"`` lines: an example tests/test_examples.py
  runs (this file checks the file exists and has a test there);
- a python block after ``<!-- doctest: run -->`` or ``<!-- doctest: run setup=NAME -->``:
  run as a program against a real server, after the prelude ``SETUPS[NAME]``;
- after ``<!-- doctest: signature omniq_fast.X.y -->``: a call listing options, each of
  which must be a parameter of ``X.y`` with the default shown;
- after ``<!-- doctest: same-as examples/NAME.py -->``: that example without its docstring;
- after ``<!-- doctest: compile (why) -->``: a fragment that cannot run alone, compiled;
- ``bash`` / ``console``: shell, whose ``omniq-fast`` and ``./dev`` commands must exist with
  the options given; ``text``: output.

Anything else (an unmarked python block, another language) fails, so no block can be
added without a check. The reference must also render every public name.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlsplit

import pytest
import redis

from omniq_fast.testing import free_ports
from support import delete_prefixed

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
if not DOCS.is_dir():  # the wheels' test runs copy tests/ alone
    pytest.skip("no docs/ beside tests/ (a copied test suite)", allow_module_level=True)

MARK = re.compile(r"^<!-- doctest: (\S+)(?: (.*?))? -->$")
INCLUDE = re.compile(r'^--8<-- "(examples/[\w.]+\.py)"$')
#: Queues and counters the blocks use: their keys are deleted before and after each run.
PREFIXES = ["{demo}", "{emails}", "{reports}", "{thumbs}", "{billing}", "{cc:doc:"]

_CLIENT = """\
import os
from omniq_fast import *
REDIS_URL = os.environ["REDIS_URL"]
client = Client(REDIS_URL)
due = now_ms() + 60_000

def handler(ctx: JobCtx) -> None:
    pass
"""
SETUPS = {
    "client": _CLIENT,
    "handler": _CLIENT,
    "job": _CLIENT + 'job_id = client.publish("demo", {"hello": "world"})\n',
    "failed": _CLIENT + """\
ids = client.publish_many("demo", [{"i": i} for i in range(3)], max_attempts=1)
reserved = client.reserve_many("demo", 3)
client.ack_fail_many("demo", reserved, ["ValueError: x"] * 3)
job_id, id1, id2 = ids
""",
    "tracing": _CLIENT + """\
from opentelemetry.sdk.trace import TracerProvider
provider = TracerProvider()
""",
}


@dataclasses.dataclass
class Block:
    path: Path
    line: int
    lang: str
    body: str
    kind: str = ""
    arg: str = ""

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def _blocks(path: Path) -> Iterator[Block]:
    lines = path.read_text().splitlines()
    i = 0
    while i < len(lines):
        opening = re.match(r"^```(\w*)", lines[i])
        if not opening:
            i += 1
            continue
        start = i
        i += 1
        while not lines[i].startswith("```"):
            i += 1
        block = Block(path, start + 1, opening.group(1), "\n".join(lines[start + 1:i]) + "\n")
        mark = MARK.match(lines[start - 1]) if start else None
        if mark:
            block.kind, block.arg = mark.group(1), mark.group(2) or ""
        i += 1
        yield block


BLOCKS = [b for path in [*sorted(DOCS.rglob("*.md")), ROOT / "README.md"] for b in _blocks(path)]
PYTHON = [b for b in BLOCKS if b.lang == "python"]
SHELL = [b for b in BLOCKS if b.lang in ("bash", "console")]


def _of_kind(kind: str) -> list[Any]:
    return [pytest.param(b, id=b.id) for b in PYTHON if b.kind == kind]


def _includes(block: Block) -> list[str]:
    found = [INCLUDE.match(line.strip()) for line in block.body.splitlines() if line.strip()]
    return [m.group(1) for m in found if m] if found and all(found) else []


def test_every_block_has_a_check() -> None:
    unchecked = []
    for b in BLOCKS:
        if b.lang == "python":
            ok = bool(_includes(b)) or b.kind in ("run", "signature", "same-as", "compile")
        else:
            ok = b.lang in ("bash", "console", "text") and not b.kind
        if not ok:
            unchecked.append(f"{b.id} ({b.lang or 'no language'}, mark {b.kind or '-'})")
    assert not unchecked, "code blocks with no check (see tests/test_docs.py):\n" + "\n".join(unchecked)
    assert len(PYTHON) > 20 and len(SHELL) > 10  # the parser found the blocks


def test_included_examples_exist_and_are_tested() -> None:
    tests = (ROOT / "tests" / "test_examples.py").read_text()
    included = [f for b in PYTHON for f in _includes(b)]
    assert len(included) >= 8
    for name in included:
        assert (ROOT / name).is_file(), name
        assert f'"{Path(name).name}"' in tests, f"{name} has no test in tests/test_examples.py"


@pytest.fixture(scope="module")
def redis_url(private_redis_url: str) -> str:
    """The examples use fixed queue names (``emails``, ``reports``...): they run on a server
    of this module's own, never on a shared one whose keys they did not make."""
    return private_redis_url


@pytest.fixture
def server(redis_url: str) -> Iterator[str]:
    conn = redis.Redis.from_url(redis_url)
    delete_prefixed(conn, *PREFIXES)
    yield redis_url
    delete_prefixed(conn, *PREFIXES)
    conn.close()


def _localised(code: str, url: str) -> str:
    """The block as it would run against the test server instead of localhost."""
    parts = urlsplit(url)
    db = int(parts.path.strip("/") or 0)
    for local in ("redis://localhost:6379/0", "redis://127.0.0.1:6379/0"):
        code = code.replace(local, url)
    code = code.replace(
        'host="localhost", port=6379', f'host="{parts.hostname}", port={parts.port}, db={db}'
    )
    # A port the block serves on: a free one here, so parallel runs do not collide.
    return code.replace("serve_worker_metrics(9100)", f"serve_worker_metrics({free_ports(1)[0]})")


@pytest.mark.parametrize("block", _of_kind("run"))
def test_run_block(block: Block, server: str, tmp_path: Path) -> None:
    setup = block.arg.removeprefix("setup=") if block.arg else ""
    assert not setup or setup in SETUPS, f"{block.id}: no setup {setup!r}"
    code = SETUPS.get(setup, "") + _localised(block.body, server)
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=dict(os.environ, REDIS_URL=server),
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.returncode == 0, f"{block.id} failed:\n{code}\n{proc.stdout}{proc.stderr}"


@pytest.mark.parametrize("block", _of_kind("signature"))
def test_signature_block(block: Block) -> None:
    module, _, attr = block.arg.partition(".")
    target: Any = importlib.import_module(module)
    for part in attr.split("."):
        target = getattr(target, part)
    params = inspect.signature(target).parameters
    call = next(n for n in ast.walk(ast.parse(block.body)) if isinstance(n, ast.Call))
    assert len(call.keywords) >= 10
    for kw in call.keywords:
        assert kw.arg in params, f"{block.id}: {kw.arg} is not a parameter of {block.arg}"
        shown = eval(compile(ast.Expression(kw.value), block.id, "eval"), {"print": print})
        assert shown == params[kw.arg].default, f"{block.id}: {kw.arg} default is {params[kw.arg].default!r}"


@pytest.mark.parametrize("block", _of_kind("same-as"))
def test_same_as_block(block: Block) -> None:
    source = (ROOT / block.arg).read_text()
    tree = ast.parse(source)
    first = tree.body[0]
    skip = first.end_lineno if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) else 0
    expected = "\n".join(source.splitlines()[skip or 0:]).strip()
    assert block.body.strip() == expected, f"{block.id} differs from {block.arg}"


@pytest.mark.parametrize("block", _of_kind("compile"))
def test_compile_block(block: Block) -> None:
    assert block.arg.startswith("(") and len(block.arg) > 10, f"{block.id}: say why it cannot run"
    compile(block.body, block.id, "exec")


def _commands(block: Block) -> Iterator[list[str]]:
    for line in block.body.splitlines():
        if block.lang == "console":
            if not line.startswith("$ "):
                continue
            line = line[2:]
        line = line.replace("\\|", "|")
        try:
            words = shlex.split(line, comments=True)
        except ValueError:
            words = line.split()
        if words:
            yield words


def _cli_command(name: str) -> Any:
    import click

    from omniq_fast.cli import cli

    with click.Context(cli) as ctx:
        return cli.get_command(ctx, name)


def _extras() -> set[str]:
    text = (ROOT / "pyproject.toml").read_text()
    section = text.split("[project.optional-dependencies]")[1].split("\n[")[0]
    return set(re.findall(r"^([\w-]+) = \[", section, re.M))


@pytest.mark.parametrize("block", [pytest.param(b, id=b.id) for b in SHELL])
def test_shell_block(block: Block) -> None:
    """Each ``omniq-fast`` command named must exist and take the options given; ``./dev``
    commands and ``pip install`` extras must exist."""
    checked = 0
    for words in _commands(block):
        for i, word in enumerate(words):
            args: list[str] = []
            if word == "omniq-fast":
                args = words[i + 1:]
            elif word == "-m" and i + 1 < len(words) and words[i + 1].startswith("omniq_fast"):
                module = words[i + 1]
                args = words[i + 2:] if module == "omniq_fast" else [module.split(".")[1], *words[i + 2:]]
            elif word == "./dev":
                assert words[i + 1] in ("demo", "test", "typecheck", "docs"), f"{block.id}: {words}"
                checked += 1
            elif word.startswith("omniq-fast[") and "install" in words:
                extras = set(word[len("omniq-fast["):-1].split(","))
                assert extras <= _extras(), f"{block.id}: no extra {extras - _extras()}"
                checked += 1
            if not args or args[0] in ("--version", "--help", "-h"):
                continue
            command = _cli_command(args[0])
            assert command is not None, f"{block.id}: no command omniq-fast {args[0]}"
            known = {"--help", "-h"}
            for param in command.params:
                known.update(getattr(param, "opts", []), getattr(param, "secondary_opts", []))
            for arg in args[1:]:
                if arg in ("|", "&&", ";", ">", "2>&1"):
                    break
                if arg.startswith("-") and arg != "-":
                    option = arg.split("=")[0]
                    assert option in known, f"{block.id}: omniq-fast {args[0]} has no {option}"
            checked += 1
            break
    assert checked or block.lang == "console" or "pip install" in block.body, (
        f"{block.id}: a shell block with nothing to check"
    )


def test_reference_renders_every_public_name() -> None:
    import omniq_fast

    directives = set()
    for page in (DOCS / "reference").glob("*.md"):
        directives.update(re.findall(r"^::: (\S+)", page.read_text(), re.M))
    modules = ["errors", "types", "metrics", "observe", "tracing", "logs", "exporter",
               "dashboard", "keys", "testing"]  # fmt: skip
    for name in modules:
        assert f"omniq_fast.{name}" in directives, f"omniq_fast.{name} is not in the reference"
    api = (DOCS / "reference" / "api.md").read_text()
    for name in omniq_fast.__all__:
        if name in ("IMPLEMENTATION", "__version__"):
            assert f"omniq_fast.{name}" in api
            continue
        obj = getattr(omniq_fast, name)
        home = getattr(obj, "__module__", "")
        if not home.startswith("omniq_fast"):  # a type alias: the module that defines it
            home = next(m for m in sys.modules if m.startswith("omniq_fast.")
                        and name in getattr(sys.modules[m], "__all__", ()))  # fmt: skip
        assert f"omniq_fast.{name}" in directives or home in directives, (
            f"omniq_fast.{name} ({home}) is rendered by no ::: directive of docs/reference"
        )


def test_home_links_every_guide() -> None:
    home = (DOCS / "index.md").read_text()
    for page in (DOCS / "guides").glob("*.md"):
        if page.name != "index.md":
            assert f"(guides/{page.name})" in home, f"the home page does not link {page.name}"


def test_readme_links_resolve() -> None:
    """mkdocs checks the site's links; the README, read on the forge, is checked here."""
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", (ROOT / "README.md").read_text())
    local = [link for link in links if "://" not in link]
    assert len(local) >= 15
    missing = [link for link in local if not (ROOT / link).exists()]
    assert not missing, f"README links to missing files: {missing}"
