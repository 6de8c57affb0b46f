"""DataRobot-style pages: ``?offset=&limit=`` → ``{count, totalCount, next, previous}``."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from litestar import Request


def page_links(
    request: Request[Any, Any, Any], *, offset: int, limit: int, total: int
) -> tuple[str | None, str | None]:
    """The ``next`` and ``previous`` URLs of a page (the request's other query
    parameters kept), ``None`` where there is no such page."""

    def link(new_offset: int) -> str:
        params = {k: v for k, v in request.query_params.items() if k not in ("offset", "limit")}
        params.update(offset=str(new_offset), limit=str(limit))
        return f"{str(request.url).split('?', 1)[0]}?{urlencode(params)}"

    nxt = link(offset + limit) if offset + limit < total else None
    prev = link(max(offset - limit, 0)) if offset > 0 else None
    return nxt, prev
