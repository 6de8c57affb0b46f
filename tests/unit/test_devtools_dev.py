"""devtools.dev: `gateway dev` in a checkout installed without moto says what to install
(the whole command runs in tests/integration/test_dev_command.py)."""

from __future__ import annotations

import sys

import pytest

from devtools.dev import run_dev
from gateway.config import Settings


def test_without_moto_it_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in [m for m in sys.modules if m == "moto" or m.startswith("moto.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "moto", None)  # import moto → ModuleNotFoundError
    settings = Settings.from_env({})
    assert settings.s3_endpoint_url is None  # the in-process S3 is wanted
    assert run_dev(settings, host="127.0.0.1", port=1) == 1
    err = capsys.readouterr().err
    assert "needs moto" in err and "pip install -e '.[dev]'" in err
