"""Without its extra, each optional module fails to import with one typed error that names
the fix (run in a fresh interpreter where the extra's package cannot be imported)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest


@pytest.mark.parametrize(
    "module, blocked, message",
    [
        ("omniq_fast.metrics", "prometheus_client",
         "metrics need the 'metrics' extra: pip install 'omniq-fast[metrics]'"),
        ("omniq_fast.exporter", "prometheus_client",
         "metrics need the 'metrics' extra: pip install 'omniq-fast[metrics]'"),
        ("omniq_fast.tracing", "opentelemetry",
         "traces need the 'tracing' extra: pip install 'omniq-fast[tracing]'"),
    ],
)  # fmt: skip
def test_a_missing_extra_is_a_typed_error_naming_the_install(
    module: str, blocked: str, message: str
) -> None:
    code = textwrap.dedent(
        f"""
        import importlib, sys
        sys.modules[{blocked!r}] = None  # importing it now raises ImportError
        from omniq_fast.errors import MissingExtra, OmniqError
        try:
            importlib.import_module({module!r})
        except MissingExtra as exc:
            assert isinstance(exc, OmniqError) and isinstance(exc, ImportError)
            print(exc)
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == message
    # The consumer itself needs neither extra.
    code = f"import sys; sys.modules[{blocked!r}] = None; import omniq_fast.observe, omniq_fast"
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0
