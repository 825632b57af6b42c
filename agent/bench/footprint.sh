#!/usr/bin/env bash
# The agent's footprint beside node_exporter + blackbox_exporter, measured in one run:
#
#   bash agent/bench/footprint.sh [SECONDS]        (default 60)
#
# Starts a local posmon collector (the agent's sink and its targets: an HTTP URL and a
# host:port on 127.0.0.1), the release agent reporting every 5 s, and node_exporter +
# blackbox_exporter scraped every 5 s by a curl loop that probes the same targets the same way
# (HTTP, TCP connect, ICMP). After SECONDS it prints each one's peak RSS (VmHWM), CPU seconds
# (utime + stime) and binary size. Everything listens and probes on 127.0.0.1 only.
# Installs the Debian exporters when missing (needs root and apt).
set -euo pipefail
cd "$(dirname "$0")/../.."
duration=${1:-60}
interval=5

need() { command -v "$1" >/dev/null 2>&1; }
if ! need prometheus-node-exporter || ! need prometheus-blackbox-exporter || ! need curl; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq prometheus-node-exporter prometheus-blackbox-exporter curl >/dev/null
fi

cargo build --release --quiet -p posmon-agent -p posmon-collector
agent_bin=target/release/posmon-agent
collector_bin=target/release/posmon-collector

work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null ||
        shuf -i 20000-60000 -n 1
}

# The collector: the agent's sink, and the target both sides probe.
collector_port=$(free_port)
"$collector_bin" serve --listen "127.0.0.1:$collector_port" --data-dir "$work/collector" \
    >"$work/collector.out" 2>"$work/collector.log" &
pids+=($!)
for _ in $(seq 100); do
    curl -fsS "http://127.0.0.1:$collector_port/healthz" >/dev/null 2>&1 && break
    sleep 0.1
done
token=$("$collector_bin" token --data-dir "$work/collector" T-BENCH)

cat >"$work/agent.toml" <<TOML
terminal_id = "T-BENCH"
collector_url = "http://127.0.0.1:$collector_port"
token = "$token"
state_dir = "$work/agent-state"
report_interval_seconds = $interval
[[targets]]
name = "http"
address = "http://localhost:$collector_port/healthz"
[[targets]]
name = "tcp"
address = "127.0.0.1:$collector_port"
TOML
# Debug logging (to count deliveries) costs the agent a little: the figures are conservative.
POSMON_LOG=debug "$agent_bin" run --config "$work/agent.toml" 2>"$work/agent.log" &
agent_pid=$!
pids+=($agent_pid)

node_port=$(free_port)
prometheus-node-exporter --web.listen-address="127.0.0.1:$node_port" 2>"$work/node.log" &
node_pid=$!
pids+=($node_pid)

cat >"$work/blackbox.yml" <<YAML
modules:
  http_2xx:
    prober: http
    timeout: 5s
  tcp_connect:
    prober: tcp
    timeout: 5s
  icmp:
    prober: icmp
    timeout: 5s
YAML
blackbox_port=$(free_port)
prometheus-blackbox-exporter --config.file="$work/blackbox.yml" \
    --web.listen-address="127.0.0.1:$blackbox_port" 2>"$work/blackbox.log" &
blackbox_pid=$!
pids+=($blackbox_pid)
sleep 1

# The scraper: what Prometheus would do every interval for the same coverage.
scrape() {
    curl -fsS "http://127.0.0.1:$node_port/metrics" >/dev/null
    local probe="http://127.0.0.1:$blackbox_port/probe"
    curl -fsS "$probe?module=http_2xx&target=http://localhost:$collector_port/healthz" >/dev/null
    curl -fsS "$probe?module=tcp_connect&target=127.0.0.1:$collector_port" >/dev/null
    curl -fsS "$probe?module=icmp&target=127.0.0.1" >/dev/null
}
end=$((SECONDS + duration))
while ((SECONDS < end)); do
    scrape || echo "a scrape failed" >&2
    sleep "$interval"
done

ticks=$(getconf CLK_TCK)
peak_rss_kib() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status"; }
cpu_seconds() { awk -v t="$ticks" '{printf "%.2f", ($14 + $15) / t}' "/proc/$1/stat"; }
size_bytes() { stat -L -c %s "$1"; }

agent_rss=$(peak_rss_kib "$agent_pid"); agent_cpu=$(cpu_seconds "$agent_pid")
node_rss=$(peak_rss_kib "$node_pid"); node_cpu=$(cpu_seconds "$node_pid")
blackbox_rss=$(peak_rss_kib "$blackbox_pid"); blackbox_cpu=$(cpu_seconds "$blackbox_pid")
reports=$(grep -c "Delivered a report" "$work/agent.log" || true)

echo "footprint over ${duration} s at a ${interval} s interval ($(nproc) cores, $(date -u +%F))"
printf '%-28s %14s %12s %14s\n' "process" "peak RSS KiB" "CPU s" "binary bytes"
printf '%-28s %14s %12s %14s\n' "posmon-agent" "$agent_rss" "$agent_cpu" "$(size_bytes "$agent_bin")"
printf '%-28s %14s %12s %14s\n' "prometheus-node-exporter" "$node_rss" "$node_cpu" "$(size_bytes "$(command -v prometheus-node-exporter)")"
printf '%-28s %14s %12s %14s\n' "prometheus-blackbox-exporter" "$blackbox_rss" "$blackbox_cpu" "$(size_bytes "$(command -v prometheus-blackbox-exporter)")"
awk -v ar="$agent_rss" -v ac="$agent_cpu" -v nr="$node_rss" -v nc="$node_cpu" -v br="$blackbox_rss" -v bc="$blackbox_cpu" 'BEGIN {
    printf "agent / (node + blackbox): RSS %.1f%%, CPU %.1f%%\n", 100 * ar / (nr + br), 100 * ac / (nc + bc)
}'
echo "reports delivered by the agent: $reports"
