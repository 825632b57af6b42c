#!/usr/bin/env bash
# Diagnosis quality: every incident type of simulator/eval/incidents.toml (single local faults,
# regional / carrier / model / firmware / app-version / merchant / gateway / resolver-wide and
# host-wide outages, two overlapping incidents, spreading incidents, a healthy fleet under 1 %
# random loss) played by the simulator against a fresh collector each, scored on the causes it
# localizes and the parties it calls. Prints one line per case and the totals (see
# BENCHMARKS.md, "Diagnosis quality").
#
# Usage: bench/eval.sh                       (release build, all cases, ~10 minutes)
#        PROFILE=debug bench/eval.sh         (the debug binaries: no release build)
#        PARALLEL=8 bench/eval.sh --only "one region" --only healthy
#        bench/eval.sh --json > eval.json
# Extra arguments go to `posmon-simulator eval` (see its --help). Loopback only; each case's
# collector is killed when the case ends.
set -euo pipefail
cd "$(dirname "$0")/.."

PROFILE=${PROFILE:-release}
if [ "$PROFILE" = release ]; then
  cargo build --release -q -p posmon-collector -p posmon-simulator
else
  cargo build -q -p posmon-collector -p posmon-simulator
fi
args=(--collector-binary "target/$PROFILE/posmon-collector" --cases simulator/eval/incidents.toml)
if [ -n "${PARALLEL:-}" ]; then
  args+=(--parallel "$PARALLEL")
fi
exec "target/$PROFILE/posmon-simulator" eval "${args[@]}" "$@"
