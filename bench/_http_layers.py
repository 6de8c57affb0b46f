"""ASGI apps for ``bench_http_layers.py``: the same trivial POST route, layer by layer.

Each reads the body and answers a small JSON document, as the webhook does around
its real work. uvicorn factories: ``bench._http_layers:NAME``.
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Litestar, Request, asgi, post
from litestar.datastructures import State
from litestar.middleware import DefineMiddleware

from gateway.config import Settings
from gateway.observability import Metrics, RequestContextMiddleware, configure_logging

PATH = "/hook/"
_ANSWER = {"records": 1, "applied": 1, "ignored": 0}


async def _respond(receive: Any, send: Any) -> None:
    while (await receive()).get("more_body"):
        pass
    await send_json(send, _ANSWER)


async def send_json(send: Any, doc: Any) -> None:
    """A 200 response with ``doc`` as its JSON body (also bench/_server.py's floor)."""
    payload = msgspec.json.encode(doc)
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


async def _raw_app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    await _respond(receive, send)


@asgi(PATH, is_mount=False, copy_scope=False)
async def _asgi_route(scope: Any, receive: Any, send: Any) -> None:
    await _respond(receive, send)


@post(PATH, status_code=200)
async def _post_route(request: Request[Any, Any, State], state: State) -> dict[str, Any]:
    await request.body()
    return _ANSWER


def raw() -> Any:
    """uvicorn and the app, nothing else."""
    return _raw_app


def litestar_asgi() -> Litestar:
    """Litestar routing to a plain ASGI route (the webhook's shape)."""
    return Litestar([_asgi_route], logging_config=None)


def litestar_post() -> Litestar:
    """Litestar routing to an ``@post`` handler with ``Request`` and ``State``."""
    return Litestar([_post_route], logging_config=None)


def _with_middleware(handler: Any) -> Litestar:
    settings = Settings.from_env({"GATEWAY_LOG_FORMAT": "json", "GATEWAY_LOG_LEVEL": "info"})
    configure_logging(settings)
    middleware = [DefineMiddleware(RequestContextMiddleware, metrics=Metrics())]
    return Litestar([handler], logging_config=None, middleware=middleware)


def litestar_asgi_middleware() -> Litestar:
    """The plain route with the gateway's request middleware (id, log line, metrics)."""
    return _with_middleware(_asgi_route)


def litestar_post_middleware() -> Litestar:
    """The ``@post`` handler with the gateway's request middleware."""
    return _with_middleware(_post_route)
