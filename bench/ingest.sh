#!/usr/bin/env bash
# Collector ingest side by side with the standard tools, same machine, same simulated reports:
#   posmon-collector (JSON reports, diagnosis on every report)
#   Prometheus Pushgateway (each report as ~45 samples, PUT to the terminal's group), with and
#     without --push.disable-consistency-check
#   VictoriaMetrics (the same samples, POST /api/v1/import/prometheus)
# For each fleet size it prints reports/s, p99 latency and the collector's memory per terminal.
# posmon is measured twice per size: while every terminal reports for the first time
# (registration: a fleet coming back after an outage), then in the steady state of a fleet that
# is known (every terminal registered), which is what a running fleet asks of it. Sizes compare
# in the steady state.
#
# Usage: bench/ingest.sh            (sizes 10000 100000 1000000; ~10 minutes)
#        SIZES="10000" DURATION=10 bench/ingest.sh
#        POSMON_ONLY=1 SIZES="100000 1000000" bench/ingest.sh   (posmon alone)
# Everything listens on 127.0.0.1 only.
set -euo pipefail
cd "$(dirname "$0")/.."

SIZES=${SIZES:-"10000 100000 1000000"}
DURATION=${DURATION:-20}
CONCURRENCY=${CONCURRENCY:-32}
# Pushgateway slows down with every group it holds: it is measured at the smallest size only.
PUSHGATEWAY_SIZES=${PUSHGATEWAY_SIZES:-10000}

need() { command -v "$1" >/dev/null 2>&1; }
if ! need prometheus-pushgateway || ! need victoria-metrics; then
  echo "Installing prometheus-pushgateway and victoria-metrics (Debian packages)..." >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus-pushgateway victoria-metrics >/dev/null
fi
cargo build --release -q -p posmon-collector -p posmon-simulator
collector=target/release/posmon-collector
simulator=target/release/posmon-simulator

work=$(mktemp -d /tmp/posmon-bench-ingest.XXXXXX)
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

free_port() {
  local port
  while true; do
    port=$((20000 + RANDOM % 40000))
    (echo >/dev/tcp/127.0.0.1/$port) 2>/dev/null || { echo "$port"; return; }
  done
}
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
wait_http() { for _ in $(seq 100); do curl -fs "$1" >/dev/null 2>&1 && return; sleep 0.1; done; echo "no answer from $1" >&2; exit 1; }
field() { python3 -c "import json,sys; print(round(json.load(open(sys.argv[1]))[sys.argv[2]], 2))" "$1" "$2"; }

# Long enough for every terminal to report at least once at ~15 000 reports/s.
duration_for() { local n=$1; local d=$(( n / 15000 + 5 )); (( d < DURATION )) && d=$DURATION; echo "$d"; }

run_load() { # sink url terminals duration out.json
  "$simulator" run --sink "$1" --collector "$2" --terminals "$3" --rate 0 --duration-seconds "$4" \
    --concurrency "$CONCURRENCY" --secret-file "$work/data/fleet-secret" --json > "$5"
}

echo "| system | terminals | reports/s | p99 ms | memory |"
echo "| --- | --- | --- | --- | --- |"
for n in $SIZES; do
  d=$(duration_for "$n")

  rm -rf "$work/data"; mkdir -p "$work/data"
  # The simulator sends each terminal's reports as fast as the collector takes them (several a
  # second), far above an agent's pace: lift the per-terminal rate limit, which would measure
  # 429s instead of ingest.
  printf 'listen = "127.0.0.1:0"\ndata_dir = "%s"\n[limits]\nterminal_requests_per_minute = 100000000\nterminal_request_burst = 100000000\n[[version_policy]]\ncomponent = "pos_app"\nminimum = "3.0"\n' "$work/data" > "$work/collector.toml"
  "$collector" serve --config "$work/collector.toml" > "$work/collector.out" 2>"$work/collector.log" &
  cpid=$!; pids+=("$cpid")
  for _ in $(seq 100); do grep -q "listening on" "$work/collector.out" 2>/dev/null && break; sleep 0.1; done
  url=$(sed -n 's/^posmon-collector listening on //p' "$work/collector.out")
  base_rss=$(rss_kib "$cpid")
  run_load posmon "$url" "$n" "$d" "$work/posmon-first.json"
  rss=$(rss_kib "$cpid")
  terminals=$(curl -fs "$url/api/v1/terminals?limit=0" | python3 -c "import json,sys; print(json.load(sys.stdin)['total'])")
  per=$(( (rss - base_rss) * 1024 / terminals ))
  echo "| posmon-collector, first reports | $n ($terminals seen) | $(field "$work/posmon-first.json" achieved_reports_per_second) | $(field "$work/posmon-first.json" latency_p99_ms) | $((rss / 1024)) MiB RSS, $per bytes/terminal |"
  run_load posmon "$url" "$n" "$DURATION" "$work/posmon.json"
  echo "| posmon-collector, steady state | $n | $(field "$work/posmon.json" achieved_reports_per_second) | $(field "$work/posmon.json" latency_p99_ms) | $(( $(rss_kib "$cpid") / 1024 )) MiB RSS |"
  kill "$cpid"; wait "$cpid" 2>/dev/null || true

  [[ -n "${POSMON_ONLY:-}" ]] && continue
  port=$(free_port)
  rm -rf "$work/vm"
  victoria-metrics -httpListenAddr="127.0.0.1:$port" -storageDataPath="$work/vm" > "$work/vm.log" 2>&1 &
  vpid=$!; pids+=("$vpid")
  wait_http "http://127.0.0.1:$port/health"
  run_load victoriametrics "http://127.0.0.1:$port" "$n" "$d" "$work/vm.json"
  echo "| VictoriaMetrics import | $n | $(field "$work/vm.json" achieved_reports_per_second) | $(field "$work/vm.json" latency_p99_ms) | $(( $(rss_kib "$vpid") / 1024 )) MiB RSS |"
  kill "$vpid"; wait "$vpid" 2>/dev/null || true

  if [[ " $PUSHGATEWAY_SIZES " == *" $n "* ]]; then
    for flags in "" "--push.disable-consistency-check"; do
      port=$(free_port)
      prometheus-pushgateway --web.listen-address="127.0.0.1:$port" $flags > "$work/pg.log" 2>&1 &
      ppid=$!; pids+=("$ppid")
      wait_http "http://127.0.0.1:$port/-/ready"
      run_load pushgateway "http://127.0.0.1:$port" "$n" "$DURATION" "$work/pg.json"
      echo "| Pushgateway ${flags:-(default)} | $n | $(field "$work/pg.json" achieved_reports_per_second) | $(field "$work/pg.json" latency_p99_ms) | $(( $(rss_kib "$ppid") / 1024 )) MiB RSS |"
      kill "$ppid"; wait "$ppid" 2>/dev/null || true
    done
  fi
done
