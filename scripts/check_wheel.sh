#!/usr/bin/env bash
# Release check (not part of the test suite): build the wheel from the committed tree, install it
# with its real dependencies from the package index into a fresh venv, and run the demo from an
# empty directory, as a user who only has the wheel would.
#
#   scripts/check_wheel.sh                             # the full demo (a few minutes on 2 CPU cores)
#   scripts/check_wheel.sh --config.train.epochs=1     # extra arguments go to `jaxwm`
#
# PY picks the Python that creates the venvs (default python3, >= 3.11); KEEP=1 keeps the
# temporary folder. Prints each step's wall time and exits non-zero on any failure.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PY:-python3}"
TMP="$(mktemp -d)"
[[ "${KEEP:-0}" == 1 ]] || trap 'rm -rf "$TMP"' EXIT
START=$SECONDS
step() { echo "[check_wheel +$((SECONDS - START))s] $*"; }

step "source: git archive HEAD of $ROOT (commit what you want checked)"
mkdir -p "$TMP/src"
git -C "$ROOT" archive HEAD | tar -x -C "$TMP/src"

step "build the wheel (isolated build: the backend comes from the index)"
"$PY" -m venv "$TMP/build-venv"
"$TMP/build-venv/bin/pip" install -q --upgrade pip
"$TMP/build-venv/bin/pip" wheel -q --no-deps -w "$TMP/dist" "$TMP/src"
WHEEL="$(ls "$TMP"/dist/jaxwm-*.whl)"
step "built $(basename "$WHEEL")"

step "install it with its dependencies into a fresh venv"
"$PY" -m venv "$TMP/venv"
"$TMP/venv/bin/pip" install -q --upgrade pip
"$TMP/venv/bin/pip" install -q "$WHEEL"

mkdir "$TMP/elsewhere"
cd "$TMP/elsewhere"
step "jaxwm --list-configs (in $PWD)"
"$TMP/venv/bin/jaxwm" --list-configs
step "jaxwm --config=demo $*"
"$TMP/venv/bin/jaxwm" --config=demo "$@"
test -f runs/demo/results.json
"$TMP/venv/bin/python" - <<'EOF'
import json, pathlib, jaxwm
assert pathlib.Path(jaxwm.__file__).is_relative_to(pathlib.Path(__import__("sys").prefix)), jaxwm.__file__
results = json.loads(pathlib.Path("runs/demo/results.json").read_text())
print("jaxwm", results.get("environment", {}).get("jaxwm"), "from", jaxwm.__file__)
EOF
step "OK: the wheel installs and runs the demo from an unrelated directory"
