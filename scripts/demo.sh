#!/usr/bin/env bash
# make demo: start the loopback metadata simulator, run the shipped manifests against it
# and a temporary root, stop it, and show which source served which capability.
#
# The scenario (issue 3): a config drive answering at once, the OpenStack HTTP API
# answering after ~2 s (1 s per GET, two round trips), EC2 unreachable (nothing listens
# at its URL; the fake DMI says OpenStack, so its platform check rules it out first).
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d "${TMPDIR:-/tmp}/cidag-demo.XXXXXX")
root="$work/root"
mkdir -p "$root"
sim_pid=
stop_simulator() {
  if [ -n "$sim_pid" ] && kill -0 "$sim_pid" 2>/dev/null; then
    kill -TERM "$sim_pid" && wait "$sim_pid" 2>/dev/null || true
  fi
  sim_pid=
}
trap stop_simulator EXIT

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
export CIDAG_SYSFS="$work/sys"               # fake DMI saying "OpenStack Nova"
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
cidag graph --dot > "$work/graph.dot"
if command -v dot >/dev/null; then
  dot -Tsvg "$work/graph.dot" -o "$work/graph.svg" && echo "rendered $work/graph.svg"
fi
cat "$work/graph.dot"
echo
echo "== cidag analyze critical-chain (what set the makespan)"
cidag analyze critical-chain "$root/var/lib/cidag/last-run.json"
cidag analyze plot "$root/var/lib/cidag/last-run.json" -o "$work/timeline.svg" && echo "timeline: $work/timeline.svg"
echo
echo "== simulator log"
sed -n '1,20p' "$work/simulator.log"
echo
echo "run record: $root/var/lib/cidag/last-run.json"
exit $rc
