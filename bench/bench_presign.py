"""Presigning speed: the hand-written SigV4 presigner vs botocore, in one run.

    .venv/bin/python bench/bench_presign.py [--number N] [--repeat R]

Each row is the best of R timeit runs of N calls (µs per URL). Before timing,
every pair is checked to give byte-identical output at a frozen signing time.
"""

from __future__ import annotations

import argparse
import functools
import sys
import timeit
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import botocore.session
from botocore.config import Config

from gateway.storage.presigner import S3Presigner, StaticCredentialSource

BUCKET = "uploads"
REGION = "eu-west-1"
ACCESS_KEY = "ASIAIOSFODNN7EXAMPLE"
SECRET_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
TOKEN = "FwoGZXIvYXdzEBYaDH+/=" * 40  # ~800 chars, like an STS session token
KEY = "proj_1/user_123/upl_01HZX3K9/quarterly report (final).pdf"
CONTENT_TYPE = "application/pdf"
SIZE = 1_048_576
CHECKSUM = "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="


def make_pair(token: str | None) -> tuple[S3Presigner, Any]:
    ours = S3Presigner(
        bucket=BUCKET,
        region=REGION,
        endpoint_url=None,
        addressing="virtual",
        credentials=StaticCredentialSource(ACCESS_KEY, SECRET_KEY, token),
    )
    client = botocore.session.get_session().create_client(
        "s3",
        region_name=REGION,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        aws_session_token=token,
        config=Config(signature_version="s3v4", s3={"addressing_style": "virtual"}),
    )
    return ours, client


def cases() -> list[tuple[str, Callable[[], object], Callable[[], object]]]:
    rows: list[tuple[str, Callable[[], object], Callable[[], object]]] = []
    for label, token in (("", None), (" +token", TOKEN)):
        ours, client = make_pair(token)

        def our_put(ours: S3Presigner = ours, checksum: str | None = None) -> str:
            return ours.presign_put(
                KEY,
                content_type=CONTENT_TYPE,
                content_length=SIZE,
                checksum_sha256=checksum,
                expires_in=3600,
                signed_at=datetime.now(UTC),
            ).url

        def boto_put(client: Any = client, checksum: str | None = None) -> str:
            params = {
                "Bucket": BUCKET,
                "Key": KEY,
                "ContentType": CONTENT_TYPE,
                "ContentLength": SIZE,
            }
            if checksum is not None:
                params["ChecksumSHA256"] = checksum
            url: str = client.generate_presigned_url("put_object", Params=params, ExpiresIn=3600)
            return url

        def our_get(ours: S3Presigner = ours) -> str:
            return ours.presign_get(
                KEY,
                expires_in=3600,
                signed_at=datetime.now(UTC),
                download_filename="quarterly report (final).pdf",
            )

        def boto_get(client: Any = client) -> str:
            url: str = client.generate_presigned_url(
                "get_object",
                Params={
                    "Bucket": BUCKET,
                    "Key": KEY,
                    "ResponseContentDisposition": (
                        'attachment; filename="quarterly report (final).pdf"'
                    ),
                },
                ExpiresIn=3600,
            )
            return url

        def our_post(ours: S3Presigner = ours) -> object:
            post = ours.presign_post(
                KEY,
                content_type=CONTENT_TYPE,
                content_length=SIZE,
                expires_in=3600,
                signed_at=datetime.now(UTC),
            )
            return (post.url, post.fields)

        def boto_post(client: Any = client) -> object:
            post = client.generate_presigned_post(
                BUCKET,
                KEY,
                Fields={"Content-Type": CONTENT_TYPE},
                Conditions=[{"Content-Type": CONTENT_TYPE}, ["content-length-range", SIZE, SIZE]],
                ExpiresIn=3600,
            )
            return (post["url"], post["fields"])

        rows += [
            (f"PUT{label}", our_put, boto_put),
            (
                f"PUT +checksum{label}",
                functools.partial(our_put, checksum=CHECKSUM),
                functools.partial(boto_put, checksum=CHECKSUM),
            ),
            (f"GET +filename{label}", our_get, boto_get),
            (f"POST policy{label}", our_post, boto_post),
        ]
    return rows


def check_identical(name: str, ours: Callable[[], object], theirs: Callable[[], object]) -> None:
    frozen = datetime(2026, 5, 6, 7, 8, 9, tzinfo=UTC)
    with (
        mock.patch("botocore.auth.get_current_datetime", return_value=frozen.replace(tzinfo=None)),
        mock.patch(
            "botocore.signers.get_current_datetime", return_value=frozen.replace(tzinfo=None)
        ),
        mock.patch(f"{__name__}.datetime") as fake_datetime,
    ):
        fake_datetime.now.return_value = frozen
        if ours() != theirs():
            raise SystemExit(f"{name}: output differs from botocore")


def best_us(func: Callable[[], object], number: int, repeat: int) -> float:
    return min(timeit.repeat(func, number=number, repeat=repeat)) / number * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=2000, help="calls per timing run")
    parser.add_argument("--repeat", type=int, default=5, help="timing runs (best is kept)")
    args = parser.parse_args()

    print(f"Python {sys.version.split()[0]}, botocore {botocore.__version__}")
    print(f"best of {args.repeat} x {args.number} calls; µs per presigned request\n")
    header = f"{'operation':<26}{'ours µs':>10}{'botocore µs':>14}{'speed-up':>10}"
    print(header)
    print("-" * len(header))
    for name, ours, theirs in cases():
        check_identical(name, ours, theirs)
        ours()  # warm caches (signing key, encoded token) as in steady state
        theirs()
        ours_us = best_us(ours, args.number, args.repeat)
        theirs_us = best_us(theirs, max(args.number // 10, 1), args.repeat)
        print(f"{name:<26}{ours_us:>10.1f}{theirs_us:>14.1f}{theirs_us / ours_us:>9.1f}x")


if __name__ == "__main__":
    main()
