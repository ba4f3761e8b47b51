#!/usr/bin/env bash
# make demo: start the loopback metadata simulator, run the shipped manifests against it
# and a target root, stop it, and show which source served which capability.
#
# The scenario (issue 3): a config drive answering at once, the OpenStack HTTP API
# answering after ~2 s (1 s per GET, two round trips), EC2 unreachable (nothing listens
# at its URL; the fake DMI says OpenStack, so its platform check rules it out first).
#
# What the README's commands read afterwards is kept in ./demo (CIDAG_DEMO_DIR): the
# target root demo/root with its state in demo/root/var/lib/cidag, and the pictures.
# Each run replaces it. The simulator's files live in a temporary folder removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
demo="${CIDAG_DEMO_DIR:-$PWD/demo}"
case "$demo" in /*) ;; *) demo="$PWD/$demo" ;; esac
if [ -e "$demo" ] && [ ! -e "$demo/.cidag-demo" ] && [ -n "$(ls -A "$demo" 2>/dev/null)" ]; then
  echo "demo: $demo exists and was not made by make demo; remove it or set CIDAG_DEMO_DIR" >&2
  exit 2
fi
rm -rf "$demo"
mkdir -p "$demo/root"
echo "state of make demo: the README's commands read it (see README.md, After the demo)" > "$demo/.cidag-demo"
root="$demo/root"
work=$(mktemp -d "${TMPDIR:-/tmp}/cidag-demo.XXXXXX")
sim_pid=
stop_simulator() {
  if [ -n "$sim_pid" ] && kill -0 "$sim_pid" 2>/dev/null; then
    kill -TERM "$sim_pid" && wait "$sim_pid" 2>/dev/null || true
  fi
  sim_pid=
}
cleanup() {
  stop_simulator
  rm -rf "$work"
}
trap cleanup EXIT

echo "== cidag serve-metadata (config drive in $work/config-2, OpenStack HTTP 1 s per request)"
mkfifo "$work/sim.url"
cidag serve-metadata \
  --write-configdrive "$work/config-2" \
  --write-sysfs "$work/sys" \
  --fault '{path: "/openstack*", method: GET, delay: 1s}' \
  > "$work/sim.url" 2> "$work/simulator.log" &
sim_pid=$!
read -r url < "$work/sim.url"
echo "simulator at $url (pid $sim_pid)"

# Point the shipped sources.yaml at the simulator (see the ${VAR:-default}s in it).
export CIDAG_CONFIGDRIVE_PATH="$work/config-2"
export CIDAG_NOCLOUD_PATH="$work/no-nocloud-seed"
export CIDAG_OPENSTACK_URL="$url"
export CIDAG_EC2_URL="http://127.0.0.1:1"   # nothing listens there: unreachable
export CIDAG_SYSFS="$work/sys"               # fake DMI saying "OpenStack Nova": GCE, Azure, Oracle, Hetzner ruled out at once
: > "$work/cmdline"
export CIDAG_CMDLINE="$work/cmdline"         # no ds= hints from this machine's kernel
export CIDAG_NETWORK_WAIT_ONLINE=false       # a temp root: network-online without checking (or touching) this machine's network

echo
echo "== cidag check"
cidag check
echo
echo "== cidag run --root $root -j 4"
rc=0
cidag run --root "$root" -j 4 || rc=$?
stop_simulator
echo
echo "== which source served which capability"
python3 - "$root/var/lib/cidag/last-run.json" <<'EOF'
import json, sys
rec = json.load(open(sys.argv[1]))
nodes = {n["id"]: n for n in rec["nodes"]}
for name, cap in sorted(rec["capabilities"].items()):
    provider = cap.get("provider") or "-"
    when = cap.get("settled_s")
    when = f"{when:5.2f}s" if isinstance(when, (int, float)) else "    -"
    print(f"  {name:18} {cap['status']:11} {when}  {provider}")
print()
for n in rec["nodes"]:
    if n["kind"] == "source":
        took = "" if n["end_s"] is None else f"{n['end_s'] - n['start_s']:.2f}s"
        print(f"  {n['id']:22} {n['status']:11} {took:>6}  {n.get('reason') or ''}")
print(f"\n  makespan {rec['makespan_s']:.2f}s, critical path {rec['critical_path_s']:.2f}s, result {rec['result']}")
EOF
echo
echo "== files the run wrote under $root"
(cd "$root" && find . -path ./var/lib/cidag -prune -o -type f -print | sort | head -40)
echo
echo "== cidag graph --dot (the compiled DAG)"
cidag graph --dot > "$demo/graph.dot"
if command -v dot >/dev/null && dot -Tsvg "$demo/graph.dot" -o "$demo/graph.svg"; then
  echo "picture: $demo/graph.svg (Graphviz source: $demo/graph.dot)"
else
  echo "Graphviz source: $demo/graph.dot (no 'dot' here to draw it; install Graphviz, or: cidag graph --mermaid)"
fi
echo
echo "== cidag analyze critical-chain --root $root (what set the makespan)"
cidag analyze critical-chain --root "$root"
cidag analyze plot --root "$root" -o "$demo/timeline.svg" 2>/dev/null && echo "timeline: $demo/timeline.svg"
echo
echo "== simulator log"
sed -n '1,20p' "$work/simulator.log"
echo
bin=$(dirname "$(command -v cidag)")
case "$bin" in "$PWD"/*) bin="${bin#"$PWD"/}" ;; esac
echo "== the demo's state is kept in $demo (the next make demo replaces it; rm -rf it when done)"
echo "  target root  $root"
echo "  run record   $root/var/lib/cidag/last-run.json"
echo "For the README's commands, put cidag on your PATH and point them at the demo's root:"
if [ -f "$bin/activate" ]; then
  echo "  . $bin/activate"
else
  echo "  export PATH=\"$bin:\$PATH\""
fi
echo "  export CIDAG_ROOT=$root"
echo "  cidag status; cidag query hostname; cidag analyze blame"
exit $rc
