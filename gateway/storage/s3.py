"""The S3 object store (aioboto3), with bounded timeouts and outage → 503."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

import aioboto3
import structlog
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError

from gateway.config import Settings
from gateway.errors import DependencyUnavailable, GatewayError, StorageRefused
from gateway.storage.base import ObjectInfo

_NOT_FOUND = {"404", "NoSuchKey", "NotFound"}
# S3 error codes that mean the gateway's own configuration is wrong (credentials,
# clock, bucket), not that S3 is down
_REFUSED = {
    "403",
    "AccessDenied",
    "AllAccessDisabled",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "RequestTimeTooSkewed",
    "NoSuchBucket",
    "InvalidBucketName",
    "AccountProblem",
}

log = structlog.get_logger(__name__)


class S3ObjectStore:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.bucket = settings.s3_bucket
        self.session = aioboto3.Session()
        self._stack = AsyncExitStack()
        self._client: Any = None
        self.retry_after = settings.retry_after

    def client_kwargs(self) -> dict[str, Any]:
        s = self.settings
        return {
            "endpoint_url": s.s3_endpoint_url,
            "region_name": s.s3_region,
            "config": Config(
                connect_timeout=s.s3_timeout,
                read_timeout=s.s3_timeout,
                retries={"max_attempts": 2, "mode": "standard"},
                s3={"addressing_style": s.s3_addressing},
                signature_version="s3v4",
            ),
        }

    async def open(self) -> None:
        self._client = await self._stack.enter_async_context(
            self.session.client("s3", **self.client_kwargs())
        )

    async def close(self) -> None:
        await self._stack.aclose()
        self._client = None

    def botocore_credentials(self) -> Any:
        """The credential chain botocore resolved (refreshes temporary credentials)."""
        import botocore.session

        return botocore.session.get_session().get_credentials()

    def unavailable(self, exc: BaseException) -> GatewayError:
        """S3 refusing the gateway itself is a misconfiguration (502); anything else
        that fails is S3 not answering as it should (503, retried)."""
        if isinstance(exc, ClientError):
            code = str(exc.response.get("Error", {}).get("Code"))
            if code in _REFUSED:
                log.error("S3 refused the gateway's request", s3_code=code)
                return StorageRefused(code)
        return DependencyUnavailable("s3", retry_after=self.retry_after, cause=repr(exc))

    async def _call(self, name: str, **kwargs: Any) -> Any:
        try:
            return await asyncio.wait_for(
                getattr(self._client, name)(**kwargs), timeout=self.settings.s3_timeout * 2
            )
        except ClientError:
            raise
        except (EndpointConnectionError, BotoCoreError, OSError, TimeoutError) as exc:
            raise self.unavailable(exc) from exc

    async def head(self, key: str) -> ObjectInfo | None:
        try:
            r = await self._call("head_object", Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code")) in _NOT_FOUND:
                return None
            raise self.unavailable(exc) from exc
        return ObjectInfo(
            key=key,
            size=int(r["ContentLength"]),
            etag=(r.get("ETag") or "").strip('"') or None,
            last_modified=r.get("LastModified"),
            version_id=r.get("VersionId"),
        )

    async def delete(self, key: str) -> None:
        try:
            await self._call("delete_object", Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code")) in _NOT_FOUND:
                return
            raise self.unavailable(exc) from exc

    async def list_prefix(self, prefix: str) -> AsyncIterator[ObjectInfo]:
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix, "MaxKeys": 1000}
            if token:
                kwargs["ContinuationToken"] = token
            try:
                page = await self._call("list_objects_v2", **kwargs)
            except ClientError as exc:
                raise self.unavailable(exc) from exc
            for obj in page.get("Contents", []):
                yield ObjectInfo(
                    key=obj["Key"],
                    size=int(obj["Size"]),
                    etag=(obj.get("ETag") or "").strip('"') or None,
                    last_modified=obj.get("LastModified"),
                )
            if not page.get("IsTruncated"):
                return
            token = page.get("NextContinuationToken")

    async def ping(self) -> None:
        try:
            await self._call("head_bucket", Bucket=self.bucket)
        except ClientError as exc:
            raise self.unavailable(exc) from exc
