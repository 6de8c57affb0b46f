"""Webhook URLs: what is accepted before any address is looked at."""

from __future__ import annotations

import pytest

from gateway.errors import ValidationFailed
from gateway.webhooks.endpoints import check_events
from gateway.webhooks.ssrf import url_parts


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://hooks.example.com/x", ("hooks.example.com", 443)),
        ("http://hooks.example.com/x", ("hooks.example.com", 80)),
        ("https://hooks.example.com:8443/x?a=1", ("hooks.example.com", 8443)),
        ("http://[2606:4700::1]/x", ("2606:4700::1", 80)),
    ],
)
def test_acceptable_urls(url: str, expected: tuple[str, int]) -> None:
    assert url_parts(url) == expected


@pytest.mark.parametrize(
    "url",
    [
        "ftp://hooks.example.com/",
        "file:///etc/passwd",
        "https:///nohost",
        "https://user:pw@hooks.example.com/",
        "https://hooks.example.com/#frag",
        "https://hooks.example.com:99999/",
        "gopher://x/",
    ],
)
def test_refused_urls(url: str) -> None:
    with pytest.raises(ValueError):
        url_parts(url)


def test_event_subscriptions() -> None:
    assert check_events(["*"]) == ["*"]
    assert check_events(["file.deleted", "file.deleted", "upload.completed"]) == [
        "file.deleted",
        "upload.completed",
    ]
    assert check_events(["file.deleted", "*"]) == ["*"]
    for bad in ([], ["upload.exploded"]):
        with pytest.raises(ValidationFailed):
            check_events(bad)
