"""The Dockerfile and .dockerignore: a non-root image whose build context is the package
only, built (without Docker) into the wheel the image installs: gateway/ and nothing of
devtools/ (``gateway dev``, moto, the demo page)."""

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

import pytest

from tests.deploy.files import ROOT, dockerfile_instructions


def test_dockerfile_builds_a_non_root_gateway_image() -> None:
    instructions = dockerfile_instructions()
    args = dict(a.split("=", 1) for k, a in instructions if k == "ARG" and "=" in a)
    bases = [a.split()[0] for k, a in instructions if k == "FROM"]
    resolved = [re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], b) for b in bases]
    assert resolved and all(b == "python:3.12-slim" for b in resolved), resolved

    runs = " ".join(a for k, a in instructions if k == "RUN")
    assert "pip install ." in runs
    assert "pip install .[" not in runs and "moto" not in runs  # no extras: no dev tools

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
        "devtools/dev.py",
        "devtools/static/demo/index.html",
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
        "devtools/dev.py",
        "devtools/static/demo/index.html",
    ):
        assert unwanted not in context, unwanted


def dockerignore_patterns() -> list[str]:
    return [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What `COPY . .` + `pip install .` in the Dockerfile get, minus Docker: the real
    build context (per .dockerignore) copied aside and built into a wheel."""
    build = importlib.import_module("docker.utils.build")
    context = sorted(build.exclude_paths(str(ROOT), dockerignore_patterns()))
    top = {p.split("/")[0] for p in context}
    assert not top & {".git", ".venv", "tests", "deploy", "devtools", "bench", "examples"}, top
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    readme = pyproject["project"]["readme"]
    assert readme in context, f"pip install . needs {readme}, the build context lacks it"

    tmp_path = tmp_path_factory.mktemp("image")
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
    (built,) = dist.glob("*.whl")
    return built


def test_the_build_context_installs_the_gateway_with_its_migrations(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        scripts = archive.read(entry_points).decode()
    migrations = sorted(p.name for p in (ROOT / "migrations").glob("*.sql"))
    assert migrations, "no migrations to ship"
    shipped = sorted(Path(n).name for n in names if n.startswith("gateway/migrations/"))
    assert shipped == migrations
    assert re.search(r"^gateway\s*=\s*gateway\.cli:main$", scripts, flags=re.M), scripts


def test_the_wheel_holds_the_product_and_none_of_the_dev_tools(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
        requires = [
            line
            for line in archive.read(metadata).decode().splitlines()
            if line.startswith("Requires-Dist:")
        ]
    outside = [n for n in names if n.split("/")[0] != "gateway" and ".dist-info/" not in n]
    assert outside == []
    assert "gateway/ledger/plan.py" in names and "gateway/quota/reserve.lua" in names
    static = sorted(n for n in names if n.startswith("gateway/static/"))
    # the product's: the usage bar, and the docs UIs' assets (offline /schema); no demo
    assert "gateway/static/storage-usage-bar.js" in static
    assert "gateway/static/vendor/scalar/standalone.js" in static
    assert not [n for n in static if "demo" in n], static
    assert not [n for n in names if Path(n).stem in {"dev", "demo"}]
    # moto only as an extra, which the image does not install
    assert [r for r in requires if "moto" in r and "extra ==" not in r] == []


def test_gateway_dev_from_the_wheel_asks_for_a_source_checkout(wheel: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target"]
    installed = subprocess.run(
        [*pip, str(site), str(wheel)], capture_output=True, text=True, timeout=300, check=False
    )
    assert installed.returncode == 0, installed.stderr
    # The wheel's gateway, with this venv's dependencies, and without the checkout
    # (the editable install's .pth line), as in the image.
    code = (
        "import sys\n"
        "root, site = sys.argv[1], sys.argv[2]\n"
        "sys.path[:] = [site, *(p for p in sys.path if p not in (root, ''))]\n"
        "import gateway.cli\n"
        "assert gateway.cli.__file__.startswith(site), gateway.cli.__file__\n"
        "sys.exit(gateway.cli.main(['dev']))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run(
        [sys.executable, "-c", code, str(ROOT), str(site)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env={**env, "GATEWAY_LOG_FORMAT": "json"},
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "gateway dev: needs a source checkout of the gateway" in result.stderr
    assert "make dev" in result.stderr
    assert "Traceback" not in result.stderr
