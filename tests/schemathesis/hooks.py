"""schemathesis hooks (loaded through schemathesis.toml): realistic data.

The test exports GATEWAY_FILE_PATH, a file it stored first, so that the positive
cases of createDownload reach a real object rather than a 404 every time. And a
client makes one Idempotency-Key per upload it means: the positive cases of
createUpload carry a key of their own, rather than the few short strings the fuzzer
would reuse with other bodies (each a 409, rightly). Webhook URLs are replaced by a
loopback one (below).
"""

from __future__ import annotations

import itertools
import os
from typing import Any

import schemathesis
from schemathesis.generation import GenerationMode

_KEYS = itertools.count(1)
# Webhook URLs the fuzzer makes up are never kept: every one becomes this loopback
# address, which the server under test (private targets refused, as by default)
# answers with 422 webhook_url_refused, so no endpoint the fuzzer makes can ever be
# delivered to (a made-up public address would be, by any deliverer on the database).
_HOOK_URL = "http://127.0.0.1:9/fuzz"


def map_case(context: Any, case: Any) -> Any:
    body = case.body
    if (
        isinstance(body, dict)
        and isinstance(body.get("url"), str)
        and case.operation.label
        in ("POST /api/storage/webhooks/", "PATCH /api/storage/webhooks/{webhook_id}/")
    ):
        case.body = {**body, "url": _HOOK_URL}
    positive = case.meta is None or case.meta.generation.mode == GenerationMode.POSITIVE
    if not positive:
        return case
    label = case.operation.label
    path = os.environ.get("GATEWAY_FILE_PATH")
    body, headers = case.body, case.headers or {}
    if label == "POST /api/storage/download/" and path and isinstance(body, dict):
        case.body = {**body, "file_path": path} if "file_path" in body else body
    elif label == "POST /api/storage/upload/" and "Idempotency-Key" in headers:
        case.headers = {**headers, "Idempotency-Key": f"fuzz-{next(_KEYS)}"}
    return case


schemathesis.hook(map_case)
