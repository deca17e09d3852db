#!/usr/bin/env bash
# Renders every kustomization under deploy/ and validates the output strictly against the
# Kubernetes schemas (kubernetes-validate, offline); a warning fails like an error. Then
# evaluates the admission policy's CEL offline (cel-python) on sample requests.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v kubectl >/dev/null || { echo "kubectl is needed for kustomize" >&2; exit 1; }
command -v kubernetes-validate >/dev/null || python3 -m pip install -q --disable-pip-version-check kubernetes-validate
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
status=0
for k in deploy deploy/remote deploy/mirror deploy/mirror/remote; do
    name=$(echo "$k" | tr / -)
    kubectl kustomize "$k" >"$out/$name.yaml"
    for version in 1.33.0 1.37.0; do
        if ! kubernetes-validate --strict -k "$version" "$out/$name.yaml" >"$out/$name.log" 2>&1 ||
            grep -qE '^(WARN|ERROR|CRITICAL)' "$out/$name.log"; then
            cat "$out/$name.log"
            echo "FAIL $k (Kubernetes $version)"
            status=1
        else
            echo "ok   $k (Kubernetes $version): $(grep -c passed "$out/$name.log") resources"
        fi
    done
done
# The admission policy's CEL, evaluated offline against the agent's and others' requests.
python3 -c 'import celpy, yaml' 2>/dev/null || python3 -m pip install -q --disable-pip-version-check cel-python pyyaml
if python3 deploy/tests/admission_policy.py >"$out/cel.log" 2>&1; then
    echo "ok   deploy/admission-policy.yaml: $(grep -c '^ok' "$out/cel.log") requests judged as intended"
else
    cat "$out/cel.log"
    echo "FAIL deploy/admission-policy.yaml"
    status=1
fi
exit $status
