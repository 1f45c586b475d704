#!/usr/bin/env bash
# One command for the whole benchmark: installs what it runs (Debian: nginx, apache2 + mod_auth_openidc, wrk, Redis;
# npm: the interop provider; PyPI: matplotlib for the chart), builds idgate in release mode, runs bench/run.py.
#   bash bench/run.sh              full run (3 repetitions of 10 s at 32 and 128 connections)
#   bash bench/run.sh --quick      a 2-second smoke run
#   bash bench/run.sh --stores     only the session-store section (request cost per store topology, Redis memory per
#                                  session); the main table stays the last full run's
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
for pkg in nginx:nginx-light apache2:apache2 wrk:wrk redis-server:redis-server node:nodejs; do
  command -v "${pkg%%:*}" >/dev/null 2>&1 || need+=("${pkg##*:}")
done
[ -f /usr/lib/apache2/modules/mod_auth_openidc.so ] || need+=(libapache2-mod-auth-openidc)
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
[ -d tests/interop/node_modules/oidc-provider ] || (cd tests/interop && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error)
python3 -c 'import matplotlib' 2>/dev/null || pip install --quiet matplotlib || echo "no matplotlib: the chart is skipped"
cargo build --release --locked --bin idgate
# The capacity writer in the dev profile: its speed does not enter Redis's memory figure, and a release build of an
# example would build the library a second time (with the dev-dependencies' features).
cargo build --locked --example store_capacity
ulimit -n 65536 || true
exec python3 bench/run.py "$@"
