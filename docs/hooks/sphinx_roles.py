"""An mkdocs hook: the docstrings cross-reference with Sphinx roles (``:class:`Client```),
which mkdocstrings passes through as text; on the rendered page the role's prefix is
dropped and the name (with a ``~`` shortener resolved) stays as code."""

import re
from typing import Any

_ROLE = re.compile(r":(?:py:)?(?:meth|class|data|mod|func|attr|exc|obj|const):<code>~?([^<]*)</code>")


def _name(match: "re.Match[str]") -> str:
    name = match.group(1)
    return f"<code>{name.rsplit('.', 1)[-1] if match.group(0).count('~') else name}</code>"


def on_page_content(html: str, **_: Any) -> str:
    return _ROLE.sub(_name, html)
