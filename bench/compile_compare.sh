#!/usr/bin/env bash
# Compilation cost of the demo and the attack demo at two commits, without a persistent cache.
#
#   bench/compile_compare.sh 67cfdf9 HEAD      # each commit in its own temporary worktree
#
# Runs `launch.py --config=configs/demo.py` then `--config=configs/demo_attack.py` at each commit,
# one after the other (run it on an idle machine), and prints one JSON line per run with the
# XLA compilations and compile seconds from the run's compile_stats.json and the wall time.
# PY picks the interpreter (default: this checkout's .venv). Worktrees are removed at the end.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PY:-$ROOT/.venv/bin/python}"
TMP="$(mktemp -d)"
trap 'for d in "$TMP"/wt-*; do git -C "$ROOT" worktree remove --force "$d" 2>/dev/null || true; done; rm -rf "$TMP"' EXIT
export JAX_PLATFORMS="${JAX_PLATFORMS:-cpu}"
for rev in "$@"; do
  wt="$TMP/wt-$rev"
  git -C "$ROOT" worktree add -q --detach "$wt" "$rev"
  sha="$(git -C "$wt" rev-parse --short HEAD)"
  for cfg in demo demo_attack; do
    start=$(date +%s.%N)
    (cd "$wt" && "$PY" launch.py --config=configs/$cfg.py --config.compile_cache= \
      --config.progress=False > "$TMP/$sha-$cfg.log" 2>&1) || { tail -5 "$TMP/$sha-$cfg.log"; exit 1; }
    end=$(date +%s.%N)
    "$PY" - "$wt/runs/$cfg/compile_stats.json" "$sha" "$cfg" "$start" "$end" <<'PYEOF'
import json, sys
stats, sha, cfg, start, end = sys.argv[1:]
s = json.load(open(stats))
print(json.dumps({"commit": sha, "config": cfg, "compilations": s["compilations"],
                  "compile_s": s["compile_s"], "wall_s": round(float(end) - float(start), 1)}))
PYEOF
  done
done
