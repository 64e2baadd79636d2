#!/usr/bin/env bash
# Check the Promela models with spin: safety (assertions, invalid end states) and the LTL claims.
# Usage: specs/check.sh            (exit 0 when every check reports "errors: 0")
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
status=0
run() {  # name, model, pan flags...
  local name=$1 model=$2; shift 2
  (cd "$work" && spin -a "$here/$model" >/dev/null && gcc -O2 ${CFLAGS:-} -o pan pan.c)
  local out
  out=$(cd "$work" && ./pan -m200000 "$@" 2>&1)
  if grep -q "errors: 0" <<<"$out"; then
    echo "spin: $name ok ($(grep -o '[0-9]* states, stored' <<<"$out"))"
  else
    echo "spin: $name FAILED"; echo "$out" | head -20; status=1
  fi
}
CFLAGS="-DSAFETY" run "bus safety" bus.pml
CFLAGS="-DSAFETY -DNOCLAIM" run "supervisor safety" supervisor.pml
CFLAGS="" run "supervisor quarantine_is_final" supervisor.pml -a -N quarantine_is_final
CFLAGS="" run "supervisor shutdown_completes" supervisor.pml -a -N shutdown_completes
exit $status
