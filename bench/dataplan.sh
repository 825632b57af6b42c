#!/usr/bin/env bash
# The data plan per terminal, as the carrier bills it (issue 17): the real agent in a network
# namespace behind a router namespace, the payment hosts and the real collector beyond it, IP
# bytes counted both ways by nftables on the terminal's interface, by kind (reports, probes,
# the rest; the POS app stand-in's payments apart), extrapolated to a 30-day month. Conditions
# run at once, each in its own namespaces: quiet, nat (idle flows forgotten after 30 s), flap
# (the HTTPS payment host down 60 s / up 60 s), payments (a POS app paying every 60 s),
# flap-payments (the switch flapping while the POS app pays through it), control (the control
# long-poll held 60 s with keepalives every 20 s, to price each), no-control (quiet without it).
# See tests/benches/dataplan.rs.
#
# Usage: bench/dataplan.sh                        (10 minutes per condition; builds release)
#        bench/dataplan.sh --minutes 1            (a smoke run)
#        bench/dataplan.sh --agent OLD/posmon-agent --collector OLD/posmon-collector
#                                                 (measure other binaries: before and after)
#        bench/dataplan.sh --conditions quiet,nat --payment-interval 30
# Needs root, ip, nft, ethtool, openssl and curl (the Debian packages are installed when
# missing). Traffic stays inside the namespaces the bench creates; they and every process in
# them are removed when it ends, interrupted too.
set -euo pipefail
cd "$(dirname "$0")/.."

[ "$(id -u)" = 0 ] || { echo "bench/dataplan.sh needs root (network namespaces)" >&2; exit 1; }
missing=()
for program in ip nft ethtool openssl curl; do
  command -v "$program" >/dev/null 2>&1 || missing+=("$program")
done
if (( ${#missing[@]} )); then
  declare -A package=([ip]=iproute2 [nft]=nftables [ethtool]=ethtool [openssl]=openssl [curl]=curl)
  packages=()
  for program in "${missing[@]}"; do packages+=("${package[$program]}"); done
  echo "Installing ${packages[*]} with apt-get." >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${packages[@]}" >/dev/null
fi

# Build the release binaries only when the arguments do not name both.
agent_given=0 collector_given=0
for argument in "$@"; do
  case "$argument" in
    --agent) agent_given=1 ;;
    --collector) collector_given=1 ;;
  esac
done
if (( ! agent_given || ! collector_given )); then
  cargo build --release -q -p posmon-agent -p posmon-collector
fi
bench=$(cargo bench -p posmon-e2e-tests --bench dataplan --no-run 2>&1 |
  sed -n 's/.*Executable.*(\(.*\)).*/\1/p' | tail -1)
[ -x "$bench" ] || { echo "cannot find the dataplan bench executable" >&2; exit 1; }

pid=
cleanup() {
  [ -n "$pid" ] || return 0
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  # What an interrupted bench left: its namespaces (named after its pid), their processes and
  # their /etc/netns files.
  for namespace in $(ip netns list | awk -v prefix="posmon-test-$pid-" 'index($1, prefix) == 1 {print $1}'); do
    for process in $(ip netns pids "$namespace"); do kill "$process" 2>/dev/null || true; done
    ip netns delete "$namespace" 2>/dev/null || true
    rm -rf "/etc/netns/$namespace"
  done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"$bench" "$@" &
pid=$!
wait "$pid"
