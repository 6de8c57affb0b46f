"""deploy/minio/setup.sh, run against a fake ``mc``: bucket, CORS, user, policy and
events, and its refusals."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import botocore.session
import pytest
from botocore.parsers import RestXMLParser
from botocore.validate import ParamValidator

from tests.deploy.files import (
    AWS,
    SETUP_SH,
)

FAKE_MC = """#!/bin/sh
# Records each call; fails when its arguments start with $MC_FAIL.
printf '%s\\n' "$*" >> "$MC_LOG"
case "$*" in
"$MC_FAIL"*) [ -n "$MC_FAIL" ] && { printf '%s\\n' "$MC_FAIL_MESSAGE" >&2; exit 1; } ;;
esac
exit 0
"""


def run_setup(
    tmp_path: Path, *, fail: str = "", fail_message: str = "boom", **overrides: str
) -> tuple[subprocess.CompletedProcess[str], list[list[str]]]:
    shell = shutil.which("sh")
    if shell is None:
        pytest.skip("no POSIX sh")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    mc = bin_dir / "mc"
    mc.write_text(FAKE_MC)
    mc.chmod(0o755)
    log = tmp_path / "mc.log"
    log.write_text("")
    env = {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
        "MC_LOG": str(log),
        "MC_FAIL": fail,
        "MC_FAIL_MESSAGE": fail_message,
        "SETUP_TMPDIR": str(tmp_path),
        "MINIO_ROOT_USER": "root-user",
        "MINIO_ROOT_PASSWORD": "root-password",
        "S3_GATEWAY_ACCESS_KEY": "gateway-key",
        "S3_GATEWAY_SECRET_KEY": "gateway-secret",
        # Spaces and empty items are tolerated; '*' must not be globbed.
        "S3_CORS_ALLOWED_ORIGINS": "http://localhost:3000, https://app.example.com,,https://*.example.org",
        **overrides,
    }
    result = subprocess.run(
        [shell, str(SETUP_SH)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,  # holds files, so an unquoted '*' would expand to their names
        timeout=60,
        check=False,
    )
    calls = [shlex.split(line) for line in log.read_text().splitlines()]
    return result, calls


def test_setup_script_bootstraps_bucket_cors_user_and_events(tmp_path: Path) -> None:
    result, calls = run_setup(tmp_path)
    assert result.returncode == 0, result.stderr
    assert calls[0] == ["alias", "set", "local", "http://minio:9000", "root-user", "root-password"]
    assert ["mb", "--ignore-existing", "local/uploads"] in calls
    cors_file = tmp_path / "gateway-cors.xml"
    assert ["cors", "set", "local/uploads", str(cors_file)] in calls
    policy_file = tmp_path / "gateway-policy.json"
    assert ["admin", "policy", "create", "local", "gateway-uploads", str(policy_file)] in calls
    assert ["admin", "user", "add", "local", "gateway-key", "gateway-secret"] in calls
    assert [
        "admin",
        "policy",
        "attach",
        "local",
        "gateway-uploads",
        "--user",
        "gateway-key",
    ] in calls
    assert calls[-1] == [
        "event",
        "add",
        "--event",
        "put,delete",
        "--ignore-existing",
        "local/uploads",
        "arn:minio:sqs::GATEWAY:webhook",
    ]
    # The user exists before it gets its policy; the bucket before its CORS rule.
    assert calls.index(
        ["admin", "user", "add", "local", "gateway-key", "gateway-secret"]
    ) < calls.index(
        ["admin", "policy", "attach", "local", "gateway-uploads", "--user", "gateway-key"]
    )

    ns = {"s3": "http://s3.amazonaws.com/doc/2006-03-01/"}
    rule = ET.parse(cors_file).getroot().find("s3:CORSRule", ns)
    assert rule is not None
    assert [e.text for e in rule.findall("s3:AllowedOrigin", ns)] == [
        "http://localhost:3000",
        "https://app.example.com",
        "https://*.example.org",
    ]
    assert {e.text for e in rule.findall("s3:AllowedMethod", ns)} >= {"PUT", "POST", "GET"}
    assert [e.text for e in rule.findall("s3:ExposeHeader", ns)] == ["ETag"]


def test_setup_script_keeps_a_wildcard_origin_literal(tmp_path: Path) -> None:
    result, _ = run_setup(tmp_path, S3_CORS_ALLOWED_ORIGINS="*")
    assert result.returncode == 0, result.stderr
    root = ET.parse(tmp_path / "gateway-cors.xml").getroot()
    origins = [e.text for e in root.iter("{http://s3.amazonaws.com/doc/2006-03-01/}AllowedOrigin")]
    assert origins == ["*"]


def test_setup_script_cors_document_is_a_valid_s3_cors_configuration(tmp_path: Path) -> None:
    result, _ = run_setup(tmp_path)
    assert result.returncode == 0, result.stderr
    model = botocore.session.get_session().get_service_model("s3")
    parsed = RestXMLParser().parse(
        {"body": (tmp_path / "gateway-cors.xml").read_bytes(), "headers": {}, "status_code": 200},
        model.operation_model("GetBucketCors").output_shape,
    )
    parsed.pop("ResponseMetadata", None)
    report = ParamValidator().validate(
        {"Bucket": "uploads", "CORSConfiguration": parsed},
        model.operation_model("PutBucketCors").input_shape,
    )
    assert not report.has_errors(), report.generate_report()
    # Same rule as the AWS example in deploy/aws/cors.json, bar the origins.
    (minio_rule,) = parsed["CORSRules"]
    (aws_rule,) = json.loads((AWS / "cors.json").read_text())["CORSRules"]
    for key in ("AllowedMethods", "AllowedHeaders", "ExposeHeaders", "MaxAgeSeconds"):
        assert minio_rule[key] == aws_rule[key], key


def test_setup_script_grants_the_same_s3_actions_as_the_aws_policy(tmp_path: Path) -> None:
    result, _ = run_setup(tmp_path, GATEWAY_S3_BUCKET="my-uploads-bucket")
    assert result.returncode == 0, result.stderr
    minio_policy = json.loads((tmp_path / "gateway-policy.json").read_text())
    aws_policy = json.loads((AWS / "iam-policy.json").read_text())

    def s3_grants(policy: dict[str, Any]) -> set[tuple[str, str]]:
        return {
            (action, resource)
            for st in policy["Statement"]
            for action in st["Action"]
            for resource in st["Resource"]
            if action.startswith("s3:")
        }

    assert s3_grants(minio_policy) == s3_grants(aws_policy)


def test_setup_script_tolerates_a_minio_without_bucket_cors(tmp_path: Path) -> None:
    result, calls = run_setup(tmp_path, fail="cors set", fail_message="NotImplemented")
    assert result.returncode == 0, result.stderr
    assert "MINIO_API_CORS_ALLOW_ORIGIN" in result.stdout
    assert calls[-1][:2] == ["event", "add"]


def test_setup_script_treats_an_attached_policy_as_done(tmp_path: Path) -> None:
    result, _ = run_setup(
        tmp_path,
        fail="admin policy attach",
        fail_message="The specified policy change is already in effect.",
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("step", ["admin policy attach", "event add", "mb", "alias set"])
def test_setup_script_fails_when_a_step_fails(tmp_path: Path, step: str) -> None:
    result, _ = run_setup(tmp_path, fail=step, fail_message="Access Denied.")
    assert result.returncode != 0


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("S3_CORS_ALLOWED_ORIGINS", "https://a.example/<script>"),
        ("S3_CORS_ALLOWED_ORIGINS", " , "),
        ("GATEWAY_S3_BUCKET", "Uploads/../x"),
        ("MINIO_ROOT_PASSWORD", ""),
    ],
)
def test_setup_script_rejects_bad_input_before_touching_minio(
    tmp_path: Path, name: str, value: str
) -> None:
    result, calls = run_setup(tmp_path, **{name: value})
    assert result.returncode != 0
    assert calls == []
