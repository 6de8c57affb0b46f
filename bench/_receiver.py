"""A webhook receiver for the benchmarks: uvicorn (httptools, uvloop) with a bare ASGI
app that answers 200 to every POST and counts the ``webhook-id``s it saw.

    python -m bench._receiver --port PORT

``GET /count`` answers ``{"requests": n, "ids": distinct (path, webhook-id) pairs}``;
``POST /reset`` forgets.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

seen: dict[bytes, int] = {}
requests = 0


async def app(scope: Any, receive: Any, send: Any) -> None:
    global requests
    if scope["type"] != "http":
        return
    more = True
    while more:  # read the body
        message = await receive()
        more = message.get("more_body", False)
    if scope["method"] == "GET":
        body = json.dumps({"requests": requests, "ids": len(seen)}).encode()
    else:
        if scope["path"] == "/reset":
            seen.clear()
            requests = 0
        else:
            requests += 1
            for name, value in scope["headers"]:
                if name == b"webhook-id":  # one id per endpoint (its path) and event
                    key = scope["path"].encode() + b" " + value
                    seen[key] = seen.get(key, 0) + 1
                    break
        body = b"{}"
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def main() -> None:
    import uvicorn

    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    args = p.parse_args()
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port,
        log_level="error",
        access_log=False,
        loop="uvloop",
        http="httptools",
        backlog=4096,
    )


if __name__ == "__main__":
    main()
