#!/usr/bin/env bash
# make demo: run the shipped manifests against a temporary root and show what happened.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(mktemp -d "${TMPDIR:-/tmp}/cidag-demo.XXXXXX")
echo "== cidag check"
cidag check
echo
echo "== cidag run --root $root"
rc=0
cidag run --root "$root" -j 4 || rc=$?
echo
echo "== files the run wrote under $root"
(cd "$root" && find . -path ./var/lib/cidag -prune -o -type f -print | sort | head -40)
echo
echo "== cidag graph --dot (the compiled DAG)"
cidag graph --dot > "$root/graph.dot"
if command -v dot >/dev/null; then
  dot -Tsvg "$root/graph.dot" -o "$root/graph.svg" && echo "rendered $root/graph.svg"
fi
head -n 30 "$root/graph.dot"
echo "... (full graph in $root/graph.dot)"
echo
echo "run record: $root/var/lib/cidag/last-run.json"
exit $rc
