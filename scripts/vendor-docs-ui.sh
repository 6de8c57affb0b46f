#!/usr/bin/env bash
# The API docs UIs that /schema (Scalar) and /schema/swagger (Swagger UI) serve, so
# that they render with no network: pinned builds from the npm registry, copied into
# gateway/static/vendor/ with their licences and the sha256 of every file
# (VERSIONS.txt; tests/unit/test_docs_assets.py checks them). To move to other
# versions, change the two pins below and run:   bash scripts/vendor-docs-ui.sh
# (needs npm; `npm pack` checks each tarball against the registry's integrity hash).
set -euo pipefail
SCALAR_VERSION=1.72.1      # @scalar/api-reference
SWAGGER_VERSION=5.35.0     # swagger-ui-dist

cd "$(dirname "$0")/.."
out=gateway/static/vendor
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

npm pack --silent --pack-destination "$work" \
  "@scalar/api-reference@${SCALAR_VERSION}" "swagger-ui-dist@${SWAGGER_VERSION}" >/dev/null
mkdir -p "$work/scalar" "$work/swagger"
tar -xzf "$work/scalar-api-reference-${SCALAR_VERSION}.tgz" -C "$work/scalar"
tar -xzf "$work/swagger-ui-dist-${SWAGGER_VERSION}.tgz" -C "$work/swagger"

rm -rf "$out"
mkdir -p "$out/scalar" "$out/swagger-ui"
cp "$work/scalar/package/dist/browser/standalone.js" "$out/scalar/"
# The package declares "license": "MIT" and ships no licence file; this is the MIT
# licence as the Scalar project words it.
cat > "$out/scalar/LICENSE" <<'LICENCE'
MIT License

Copyright (c) 2023-present Scalar

Permission is hereby granted, free of charge, to any person obtaining a copy
of this software and associated documentation files (the "Software"), to deal
in the Software without restriction, including without limitation the rights
to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all
copies or substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
SOFTWARE.
LICENCE
for f in swagger-ui-bundle.js swagger-ui-bundle.js.LICENSE.txt \
         swagger-ui-standalone-preset.js swagger-ui-standalone-preset.js.LICENSE.txt \
         swagger-ui.css LICENSE NOTICE; do
  cp "$work/swagger/package/$f" "$out/swagger-ui/"
done

{
  echo "# Vendored by scripts/vendor-docs-ui.sh from the npm registry; do not edit."
  echo "@scalar/api-reference ${SCALAR_VERSION} MIT"
  echo "swagger-ui-dist ${SWAGGER_VERSION} Apache-2.0"
  echo "# sha256  file"
  (cd "$out" && find scalar swagger-ui -type f | LC_ALL=C sort | xargs sha256sum)
} > "$out/VERSIONS.txt"
echo "vendored into $out:"
cat "$out/VERSIONS.txt"
