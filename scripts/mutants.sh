#!/usr/bin/env bash
# Mutation testing of the gate's pure modules (issue 19): cargo-mutants changes the code that decides who gets in,
# one small change at a time, and runs the UNIT tests only (`cargo test --lib`) against each change. A change no test
# notices ("missed") is a rule no test pins down. Prints caught / missed / unviable per file and in total, and exits
# 0 only when at least MUTANTS_TARGET percent (default 95) of the viable mutants are caught.
#
#   bash scripts/mutants.sh                    every listed module
#   bash scripts/mutants.sh src/policy.rs      some of them (paths as listed below)
#
# Environment: MUTANTS_JOBS (default 1: one build at a time), MUTANTS_TARGET (default 95), MUTANTS_OUT (default
# target/mutants; a second run at the same time needs its own), MUTANTS_ARGS (more cargo-mutants options, e.g.
# `--in-place` to mutate this tree itself instead of a scratch copy; do not edit the tree while such a run is going).
# Results: $MUTANTS_OUT/mutants.out/ (missed.txt lists the survivors). Timeouts count as caught.
# Equivalent mutants are excluded in .cargo/mutants.toml, each with its reason. Not in CI: it takes minutes.
set -euo pipefail
cd "$(dirname "$0")/.."

# The modules under test, in one place. Add each new pure module of the gate here (path rules, JWE, access tokens,
# assertion signing, ...) together with its unit tests.
MODULES=(
  src/id_token.rs
  src/id_token/claims.rs
  src/id_token/keys.rs
  src/id_token/jwe.rs
  src/route.rs
  src/login/redirect.rs
  src/policy.rs
  src/identity.rs
  src/session/seal.rs
  src/signing.rs
  src/own_keys.rs
  src/oidc/client_auth.rs
  src/oidc/par.rs
  src/check/capabilities.rs
  src/bearer.rs
  src/assertion.rs
  src/oidc/dpop.rs
  src/login/preserved_post.rs
  src/forward/h1.rs
  src/framing.rs
  src/server/h1.rs
)

jobs="${MUTANTS_JOBS:-1}"
target="${MUTANTS_TARGET:-95}"
out="${MUTANTS_OUT:-target/mutants}"
files=("$@")
[ ${#files[@]} -gt 0 ] || files=("${MODULES[@]}")
for f in "${files[@]}"; do
  [ -f "$f" ] || { echo "mutants.sh: no such file: $f" >&2; exit 2; }
done

if ! cargo mutants --version >/dev/null 2>&1; then
  echo "== installing cargo-mutants"
  cargo install --locked cargo-mutants
fi

file_args=()
for f in "${files[@]}"; do file_args+=(--file "$f"); done

# A built ./target is copied into the scratch tree, so only idgate itself is rebuilt there, not its dependencies.
copy_target=false
[ -d target/debug ] && copy_target=true
copy_arg=(--copy-target="$copy_target")

# `--in-place` runs one build at a time and refuses `--jobs` and `--copy-target` (there is no copy).
jobs_arg=(--jobs "$jobs")
case " ${MUTANTS_ARGS:-} " in *" --in-place "*) jobs_arg=() copy_arg=() ;; esac

mkdir -p "$out"
start=$(date +%s)
status=0
# `--cargo-arg=--lib` puts `--lib` on the build and on the test command: unit tests only (with `-- --lib` the
# integration tests would still be built for every mutant). The test timeout has a floor: the machine is shared.
# shellcheck disable=SC2086 # MUTANTS_ARGS is a list of options
cargo mutants "${jobs_arg[@]}" --output "$out" --minimum-test-timeout 60 --colors never "${copy_arg[@]}" \
  --cargo-arg=--lib "${file_args[@]}" ${MUTANTS_ARGS:-} || status=$?
elapsed=$(($(date +%s) - start))
# 0: all caught; 2: some missed; 3: some timed out. Anything else (1 usage, 4 the unmutated tree fails) is fatal.
case "$status" in
  0 | 2 | 3) ;;
  *)
    echo "mutants.sh: cargo mutants failed (exit $status)" >&2
    exit "$status"
    ;;
esac

dir="$out/mutants.out"
count() { # count OUTCOME FILE: mutants of FILE with this outcome
  [ -f "$dir/$1.txt" ] || { echo 0; return; }
  grep -c "^$2:" "$dir/$1.txt" || true
}
echo
printf '%-28s %7s %7s %8s %8s %8s\n' module caught missed timeout unviable caught%
tc=0 tm=0 tt=0 tu=0
for f in "${files[@]}"; do
  c=$(count caught "$f") m=$(count missed "$f") t=$(count timeout "$f") u=$(count unviable "$f")
  tc=$((tc + c)) tm=$((tm + m)) tt=$((tt + t)) tu=$((tu + u))
  v=$((c + m + t))
  pct=$([ "$v" -gt 0 ] && awk -v a=$((c + t)) -v b="$v" 'BEGIN { printf "%.1f", 100 * a / b }' || echo -)
  printf '%-28s %7d %7d %8d %8d %8s\n' "$f" "$c" "$m" "$t" "$u" "$pct"
done
viable=$((tc + tm + tt))
pct=$(awk -v a=$((tc + tt)) -v b="$viable" 'BEGIN { printf "%.1f", b ? 100 * a / b : 100 }')
printf '%-28s %7d %7d %8d %8d %8s\n' total "$tc" "$tm" "$tt" "$tu" "$pct"
echo
echo "mutants: $tc caught, $tm missed, $tt timeout, $tu unviable; ${pct} % of $viable viable caught by unit tests (target ${target} %), ${elapsed}s"
if [ "$tm" -gt 0 ]; then
  echo "missed (also in $dir/missed.txt):"
  sed 's/^/  /' "$dir/missed.txt"
fi
awk -v p="$pct" -v t="$target" 'BEGIN { exit !(p + 0 >= t + 0) }' || {
  echo "mutants.sh: below the ${target} % target" >&2
  exit 1
}
