"""A SaaS backend in front of the upload gateway, with a simulated sign-in.

Run it (the gateway must be running; ``gateway dev`` prints a key)::

    GATEWAY_URL=http://127.0.0.1:8080 GATEWAY_API_KEY=gwk_... \
        python -m examples.saas_backend.app

then open http://127.0.0.1:8000/, sign in with any user name and upload files. The
signed-in user's name is the gateway tenant id; the project API key never leaves this
server. The file page and its API are :mod:`examples.saas_backend.files`, which calls
the gateway with the typed client (``upload_gateway_client``, clients/python) — this
example needs that and Litestar, not the gateway's own package.
"""

from __future__ import annotations

import html
import os
import re
from typing import Annotated, Any

import msgspec
from litestar import Litestar, MediaType, Request, Response, Router, get, post
from litestar.connection import ASGIConnection
from litestar.datastructures import State
from litestar.enums import RequestEncodingType
from litestar.exceptions import NotAuthorizedException
from litestar.handlers import BaseRouteHandler
from litestar.middleware.session.server_side import ServerSideSessionConfig
from litestar.params import Body
from litestar.response import Redirect
from upload_gateway_client import AsyncGatewayClient

from examples.saas_backend.files import files_router

FILES_PATH = "/files"
USER_PATTERN = re.compile(r"^[A-Za-z0-9._:@-]{1,128}$")  # the gateway's tenant id rule


class Login(msgspec.Struct, kw_only=True, frozen=True):
    user: str


class NotSignedIn(NotAuthorizedException):
    """No user in the session."""


def signed_in_user(connection: ASGIConnection[Any, Any, Any, Any]) -> str | None:
    """The user name kept in the (server-side) session, if it is a valid tenant id."""
    user = connection.session.get("user")
    return user if isinstance(user, str) and USER_PATTERN.match(user) else None


def tenant_of(request: Request[Any, Any, Any]) -> str:
    """The gateway tenant for this request: the signed-in user (the guard ensures one)."""
    user = signed_in_user(request)
    if user is None:
        raise NotSignedIn("Sign in first")
    return user


def require_user(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    if signed_in_user(connection) is None:
        raise NotSignedIn("Sign in first")


def not_signed_in(request: Request[Any, Any, Any], exc: NotSignedIn) -> Response[Any]:
    if "/api/" in request.url.path:
        return Response(
            content={"detail": "Sign in first", "code": "not_signed_in"},
            status_code=401,
            media_type=MediaType.JSON,
        )
    return Redirect(path="/", status_code=303)


LOGIN_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Sign in — Example SaaS</title>
<style>body{{font-family:system-ui,sans-serif;max-width:28rem;margin:4rem auto;padding:0 1rem}}
input,button{{font:inherit;padding:.4rem .6rem}}</style></head>
<body><h1>Example SaaS</h1>
<p>{status}</p>
<form method="post" action="/login">
  <label>User name <input name="user" required pattern="[A-Za-z0-9._:@\\-]{{1,128}}"
     value="{user}" autocomplete="username"></label>
  <button type="submit">Sign in</button>
</form>
{extra}
</body></html>
"""


@get("/", media_type=MediaType.HTML, include_in_schema=False)
async def home(request: Request[Any, Any, Any]) -> str:
    user = signed_in_user(request)
    if user is None:
        return LOGIN_PAGE.format(status="Not signed in.", user="", extra="")
    safe = html.escape(user)
    extra = (
        f'<p><a href="{FILES_PATH}/">Go to your files</a></p>'
        '<form method="post" action="/logout"><button type="submit">Sign out</button></form>'
    )
    return LOGIN_PAGE.format(
        status=f"Signed in as <strong>{safe}</strong>.", user=safe, extra=extra
    )


@post("/login", status_code=303, include_in_schema=False)
async def login(
    request: Request[Any, Any, Any],
    data: Annotated[Login, Body(media_type=RequestEncodingType.URL_ENCODED)],
) -> Response[Any]:
    # A stand-in for real authentication: whoever signs in is that user.
    if not USER_PATTERN.match(data.user):
        return Response(
            content=LOGIN_PAGE.format(status="That user name is not valid.", user="", extra=""),
            status_code=422,
            media_type=MediaType.HTML,
        )
    request.set_session({"user": data.user})
    return Redirect(path=f"{FILES_PATH}/", status_code=303)


@post("/logout", status_code=303, include_in_schema=False)
async def logout(request: Request[Any, Any, Any]) -> Response[Any]:
    request.clear_session()
    return Redirect(path="/", status_code=303)


def create_example_app(*, gateway_url: str, api_key: str) -> Litestar:
    gateway = AsyncGatewayClient(gateway_url, api_key)
    files = files_router(gateway, gateway_url=gateway_url, tenant_of=tenant_of)
    signed_in_area = Router(path=FILES_PATH, route_handlers=[files], guards=[require_user])
    page_headers = {
        "Cache-Control": "no-cache",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        # scripts from here and the gateway (its usage bar); the bytes go to S3
        "Content-Security-Policy": (
            f"default-src 'self'; script-src 'self' {gateway_url.rstrip('/')}; "
            # (the usage bar styles its shadow DOM inline)
            "style-src 'self' 'unsafe-inline'; connect-src 'self' http: https:; "
            "img-src 'self' data:; frame-ancestors 'none'"
        ),
    }
    return Litestar(
        route_handlers=[home, login, logout, signed_in_area],
        middleware=[ServerSideSessionConfig().middleware],
        exception_handlers={NotSignedIn: not_signed_in},
        state=State({"page_headers": page_headers}),
        on_shutdown=[gateway.aclose],
    )


def main() -> None:
    import uvicorn

    gateway_url = os.environ.get("GATEWAY_URL", "http://127.0.0.1:8080")
    api_key = os.environ.get("GATEWAY_API_KEY")
    if not api_key:
        raise SystemExit("Set GATEWAY_API_KEY to a project key (gateway dev prints one).")
    host = os.environ.get("HOST", "127.0.0.1")
    port = int(os.environ.get("PORT", "8000"))
    print(f"Example SaaS backend on http://{host}:{port}/ (gateway: {gateway_url})", flush=True)
    uvicorn.run(
        create_example_app(gateway_url=gateway_url, api_key=api_key),
        host=host,
        port=port,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
