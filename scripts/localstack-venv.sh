#!/usr/bin/env bash
# Create (once) a Python 3.13 virtualenv holding LocalStack's S3 runtime, for the
# integration tests that need real S3 signature checks (moto checks no presigned
# signature, expiry or length). tests/support/localstack.py starts it as a host process.
#
# Idempotent: when the venv already has the pinned LocalStack, it does nothing (~0.3 s).
# A fresh build takes about a minute. Prints the venv path as its last line on stdout.
#
# Environment:
#   LOCALSTACK_VENV    where the venv goes (default: <repo>/.venv-localstack); the tests
#                      read the same variable, so CI can keep one outside the clone
#   LOCALSTACK_PYTHON  a Python 3.13 interpreter (default: pyenv's 3.13, else python3.13)
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${LOCALSTACK_VENV:-${repo_root}/.venv-localstack}"
localstack_version="2026.3.0"

# LocalStack 2026.3 fails to start with newer releases of these.
pins=(
  "localstack-core[runtime]==${localstack_version}"
  "cbor2<5.7"
  "cryptography<44"
  "pyopenssl<24.3"
  "joserfc<1.1"
  "service_identity"
)

# Written last, so an interrupted build never passes for a ready venv; it holds the pins,
# so changing them rebuilds.
stamp_name=".localstack-pins"
is_ready() {
  [[ -x "$1/bin/python" && -f "$1/${stamp_name}" ]] \
    && [[ "$(cat "$1/${stamp_name}")" == "${pins[*]}" ]]
}

if is_ready "${venv}"; then
  echo "${venv}"
  exit 0
fi

find_python() {
  if [[ -n "${LOCALSTACK_PYTHON:-}" ]]; then
    echo "${LOCALSTACK_PYTHON}"
    return
  fi
  local candidate
  for candidate in "${PYENV_ROOT:-${HOME}/.pyenv}"/versions/3.13*/bin/python3.13; do
    if [[ -x "${candidate}" ]]; then
      echo "${candidate}"
      return
    fi
  done
  if command -v python3.13 >/dev/null 2>&1; then
    command -v python3.13
    return
  fi
  echo "localstack-venv: no Python 3.13 found (set LOCALSTACK_PYTHON)" >&2
  exit 1
}

python="$(find_python)"
started=${SECONDS}
log="$(mktemp -t localstack-venv.XXXXXX.log)"
echo "localstack-venv: building ${venv} with ${python} (log: ${log})" >&2
rm -rf "${venv}"
if ! {
  "${python}" -m venv "${venv}" \
    && "${venv}/bin/python" -m pip install --disable-pip-version-check --upgrade pip \
    && "${venv}/bin/python" -m pip install --disable-pip-version-check "${pins[@]}" \
    && "${venv}/bin/python" -c "import localstack.runtime.main"
} >"${log}" 2>&1; then
  tail -n 40 "${log}" >&2
  echo "localstack-venv: build failed (full log: ${log})" >&2
  exit 1
fi
echo "${pins[*]}" >"${venv}/${stamp_name}"
rm -f "${log}"
echo "localstack-venv: ready in $((SECONDS - started))s" >&2
echo "${venv}"
