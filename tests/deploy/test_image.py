"""The Dockerfile and .dockerignore: a non-root image whose build context is the package
only, built (without Docker) into the wheel the image installs."""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

from tests.deploy.files import (
    ROOT,
    dockerfile_instructions,
)


def test_dockerfile_builds_a_non_root_gateway_image() -> None:
    instructions = dockerfile_instructions()
    args = dict(a.split("=", 1) for k, a in instructions if k == "ARG" and "=" in a)
    bases = [a.split()[0] for k, a in instructions if k == "FROM"]
    resolved = [re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], b) for b in bases]
    assert resolved and all(b == "python:3.12-slim" for b in resolved), resolved

    runs = " ".join(a for k, a in instructions if k == "RUN")
    assert "pip install ." in runs

    final_stage = instructions[max(i for i, (k, _) in enumerate(instructions) if k == "FROM") :]
    users = [a for k, a in final_stage if k == "USER"]
    assert users, "the runtime stage must switch user"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "numeric, non-root (runAsNonRoot can check it)"

    single = {k: a for k, a in final_stage if k in {"ENTRYPOINT", "CMD", "HEALTHCHECK", "EXPOSE"}}
    assert json.loads(single["ENTRYPOINT"]) == ["gateway"]
    assert json.loads(single["CMD"]) == ["serve", "--host", "0.0.0.0", "--port", "8080"]
    assert single["EXPOSE"] == "8080"
    assert "urllib" in single["HEALTHCHECK"] and "127.0.0.1:8080/healthz" in single["HEALTHCHECK"]
    assert "curl" not in single["HEALTHCHECK"]


def test_dockerfile_entrypoint_is_the_projects_console_script() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "gateway" in pyproject["project"]["scripts"]


def test_dockerignore_admits_the_package_and_nothing_secret(tmp_path: Path) -> None:
    build = importlib.import_module("docker.utils.build")  # the Docker SDK's own matcher
    files = [
        "pyproject.toml",
        "README.md",
        "gateway/__init__.py",
        "gateway/db/queries.sql",
        "gateway/__pycache__/config.cpython-312.pyc",
        "migrations/0001_projects.sql",
        ".env",
        "deploy/.env",
        "deploy/k8s/secret.env",
        ".git/config",
        ".venv/bin/python",
        "tests/unit/test_x.py",
        "bench/run.py",
    ]
    for name in files:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x")
    context = {
        p.replace(os.sep, "/") for p in build.exclude_paths(str(tmp_path), dockerignore_patterns())
    }
    for wanted in (
        "pyproject.toml",
        "README.md",
        "gateway/__init__.py",
        "gateway/db/queries.sql",
        "migrations/0001_projects.sql",
    ):
        assert wanted in context, wanted
    for unwanted in (
        ".env",
        "deploy/.env",
        "deploy/k8s/secret.env",
        ".git/config",
        ".venv/bin/python",
        "tests/unit/test_x.py",
        "gateway/__pycache__/config.cpython-312.pyc",
    ):
        assert unwanted not in context, unwanted


def dockerignore_patterns() -> list[str]:
    return [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


def test_the_build_context_installs_the_gateway_with_its_migrations(tmp_path: Path) -> None:
    """What `COPY . .` + `pip install .` in the Dockerfile get, minus Docker: the real
    build context (per .dockerignore) copied aside and built into a wheel."""
    build = importlib.import_module("docker.utils.build")
    context = sorted(build.exclude_paths(str(ROOT), dockerignore_patterns()))
    assert not [p for p in context if p.split("/")[0] in {".git", ".venv", "tests", "deploy"}]
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    readme = pyproject["project"]["readme"]
    assert readme in context, f"pip install . needs {readme}, the build context lacks it"

    copy = tmp_path / "context"
    for rel in context:
        src, dst = ROOT / rel, copy / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            dst.symlink_to(os.readlink(src))
        elif src.is_dir():
            dst.mkdir(exist_ok=True)
        else:
            shutil.copy2(src, dst)
    dist = tmp_path / "dist"
    # Build isolation, as in the image: pip fetches the build backend pyproject names.
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "--no-deps"]
    result = subprocess.run(
        [*pip_wheel, "--quiet", "--wheel-dir", str(dist), str(copy)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    (wheel,) = dist.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        scripts = archive.read(entry_points).decode()
    migrations = sorted(p.name for p in (ROOT / "migrations").glob("*.sql"))
    assert migrations, "no migrations to ship"
    shipped = sorted(Path(n).name for n in names if n.startswith("gateway/migrations/"))
    assert shipped == migrations
    assert re.search(r"^gateway\s*=\s*gateway\.cli:main$", scripts, flags=re.M), scripts
