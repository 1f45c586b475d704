#!/usr/bin/env bash
# Installs the real components the tests use when they are missing: nginx, Redis and Chromium from Debian's
# packages, and the interop suite's npm packages (oidc-provider, playwright-core; never a downloaded browser); for
# the differential path suite Flask, Caddy and Tomcat 10 from Debian's packages and Koa/Express from npm.
# The identity assertion verifiers: PyJWT (python3-jwt) and `jose` from npm.
# Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
# Sentinel tests (tests/it/redis_ha.rs) run Debian's redis-sentinel (its own package) and create the cluster with
# redis-cli (redis-tools, which redis-server depends on).
command -v redis-sentinel >/dev/null 2>&1 || need+=(redis-sentinel)
command -v redis-cli >/dev/null 2>&1 || need+=(redis-tools)
command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ] || need+=(chromium)
command -v node >/dev/null 2>&1 || need+=(nodejs npm)
# The differential path suite (tests/it/differential.rs): Debian's own python3 with Flask, Caddy, Tomcat 10 (its JRE
# and Eclipse's Java compiler for the JSPs come as dependencies).
/usr/bin/python3 -c 'import flask' >/dev/null 2>&1 || need+=(python3-flask)
# The ext_authz gRPC client (tests/extauthz): a virtualenv of Debian's python3 with grpcio and Envoy's protos.
/usr/bin/python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
command -v caddy >/dev/null 2>&1 || [ -x /usr/bin/caddy ] || need+=(caddy)
[ -f /usr/share/tomcat10/bin/bootstrap.jar ] && [ -f /usr/share/java/eclipse-jdt-core.jar ] || need+=(tomcat10-common)
# The identity assertion's copyable verifiers (deploy/verify/): PyJWT with its crypto backend for Debian's python3.
/usr/bin/python3 -c 'import jwt, cryptography' >/dev/null 2>&1 || need+=(python3-jwt python3-cryptography)

if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "scripts/deps.sh: missing ${need[*]}; install them (apt-get install ${need[*]}) or run as root" >&2
    exit 1
  fi
  echo "== installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if [ ! -d tests/interop/node_modules/oidc-provider ] || [ ! -d tests/interop/node_modules/playwright-core ]; then
  echo "== npm ci (tests/interop)"
  (cd tests/interop && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error)
fi

if [ ! -d tests/differential/node_modules/koa ] || [ ! -d tests/differential/node_modules/express ] \
  || [ ! -d tests/differential/node_modules/@koa/router ]; then
  echo "== npm ci (tests/differential)"
  (cd tests/differential && npm ci --no-audit --no-fund --loglevel=error)
fi

if [ ! -d deploy/verify/node_modules/jose ]; then
  echo "== npm ci (deploy/verify)"
  (cd deploy/verify && npm ci --no-audit --no-fund --loglevel=error)
fi

if ! tests/extauthz/.venv/bin/python -c 'import grpc, envoy.service.auth.v3.external_auth_pb2_grpc' >/dev/null 2>&1; then
  echo "== pip install (tests/extauthz)"
  /usr/bin/python3 -m venv tests/extauthz/.venv
  tests/extauthz/.venv/bin/pip install -q --disable-pip-version-check -r tests/extauthz/requirements.txt
fi

# The OTLP decoder (tests/otlp/decode.py): OpenTelemetry's Python protos, in a virtualenv of their own.
if ! tests/otlp/.venv/bin/python -c 'import opentelemetry.proto.collector.trace.v1.trace_service_pb2' >/dev/null 2>&1; then
  echo "== pip install (tests/otlp)"
  /usr/bin/python3 -m venv tests/otlp/.venv
  tests/otlp/.venv/bin/pip install -q --disable-pip-version-check -r tests/otlp/requirements.txt
fi
