"""Named SQL queries from ``.sql`` files in this package, each loaded once.

``queries.sql`` holds the core's (``Q``); a feature with tables of its own keeps its
queries in a file of its own (``Queries("audit.sql")``)."""

from __future__ import annotations

import re
from functools import cache
from importlib.resources import files

_NAME = re.compile(r"^--\s*name:\s*(\w+)\s*$", re.MULTILINE)


@cache
def load_queries(resource: str = "queries.sql") -> dict[str, str]:
    text = files("gateway.db").joinpath(resource).read_text(encoding="utf-8")
    parts = _NAME.split(text)
    queries: dict[str, str] = {}
    # parts = [preamble, name1, body1, name2, body2, ...]
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        sql = body.strip()
        if name in queries:
            raise ValueError(f"duplicate query name {name!r} in {resource}")
        queries[name] = sql
    return queries


class Queries:
    """Attribute access to the named queries of one file: ``Q.get_project``."""

    def __init__(self, resource: str = "queries.sql") -> None:
        self._resource = resource

    def __getattr__(self, name: str) -> str:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return load_queries(self._resource)[name]
        except KeyError:
            raise AttributeError(f"no query named {name!r} in {self._resource}") from None


Q = Queries()
