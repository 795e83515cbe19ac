#!/usr/bin/env bash
# The whole test suite on a busy machine: a fresh clone of this checkout's HEAD, a Python busy
# loop on every core the whole time, and the README's test command run RUNS times in a row
# (default 3). A flaky test shows here: every run must pass. Prints each run's wall time and
# result, then a summary line.
#   bash tools/test_busy.sh            # 3 runs
#   RUNS=1 bash tools/test_busy.sh -m unit
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUNS=${RUNS:-3}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/bharateo-busy.XXXXXX")
CLONE="$WORK/$(basename "$ROOT")"  # beside a link to ../shared, as the tests expect
git clone -q "$ROOT" "$CLONE"
[ -e "$ROOT/../shared" ] && ln -s "$(cd "$ROOT/../shared" && pwd)" "$WORK/shared"
BUSY=()
stop_busy() { for pid in "${BUSY[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap stop_busy EXIT
for _ in $(seq 1 "$(nproc)"); do
  python3 -c "while True: pass" & BUSY+=($!)
done
echo "busy loops on $(nproc) cores: ${BUSY[*]}; clone $CLONE at $(git -C "$ROOT" rev-parse --short HEAD)"
passed=0
for run in $(seq 1 "$RUNS"); do
  start=$SECONDS
  if (cd "$CLONE" && bash tools/test.sh "$@"); then
    passed=$((passed + 1)); result=passed
  else
    result=FAILED
  fi
  echo "==> busy run $run/$RUNS: $result in $((SECONDS - start)) s (load $(cut -d' ' -f1-3 /proc/loadavg))"
done
echo "busy-machine runs: $passed of $RUNS passed"
[ "$passed" = "$RUNS" ]
