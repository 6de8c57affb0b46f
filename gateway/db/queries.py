"""Named SQL queries from ``queries.sql``, loaded once."""

from __future__ import annotations

import re
from functools import cache
from importlib.resources import files

_NAME = re.compile(r"^--\s*name:\s*(\w+)\s*$", re.MULTILINE)


@cache
def load_queries() -> dict[str, str]:
    text = files("gateway.db").joinpath("queries.sql").read_text(encoding="utf-8")
    parts = _NAME.split(text)
    queries: dict[str, str] = {}
    # parts = [preamble, name1, body1, name2, body2, ...]
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        sql = body.strip()
        if name in queries:
            raise ValueError(f"duplicate query name {name!r} in queries.sql")
        queries[name] = sql
    return queries


class Queries:
    """Attribute access to the named queries: ``Q.get_project``."""

    def __getattr__(self, name: str) -> str:
        try:
            return load_queries()[name]
        except KeyError:
            raise AttributeError(f"no query named {name!r} in queries.sql") from None


Q = Queries()
