#!/usr/bin/env bash
# The `[bans] deny` list of deny.toml, checked with cargo alone: fails when any banned crate is in the resolved
# dependency graph (every target; normal, build and dev dependencies). `.ci/run` runs this on every machine and
# cargo-deny itself (bans and licences) where it is installed: building cargo-deny from source took 16 min of wall
# time here (4 min of CPU) on the shared 2-core machine, too much to add to each CI run on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."

banned=$(sed -n '/^\[bans\]/,/^\[/p' deny.toml | grep -o 'crate = "[^"]*"' | cut -d'"' -f2)
if [ -z "$banned" ]; then
  echo "scripts/bans.sh: no [bans] deny entries found in deny.toml" >&2
  exit 1
fi
fail=0
for crate in $banned; do
  err=$(mktemp)
  if out=$(cargo tree --locked --target all -e normal,build,dev -i "$crate" 2>"$err"); then
    # In Cargo.lock (an optional dependency of something) but not activated: cargo prints nothing.
    if [ -n "$out" ]; then
      echo "banned crate $crate is a dependency (deny.toml):"
      echo "$out"
      fail=1
    fi
  elif ! grep -q "did not match any packages" "$err"; then
    echo "scripts/bans.sh: cargo tree failed for $crate:" >&2
    cat "$err" >&2
    fail=1
  fi
  rm -f "$err"
done
[ "$fail" -eq 0 ] && echo "bans ok: none of $(echo $banned | tr ' ' ',') in the dependency graph"
exit "$fail"
