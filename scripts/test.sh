#!/usr/bin/env bash
# The whole test suite: unit tests, integration tests (real servers on loopback: the development issuer, nginx,
# Redis) and the binary's own tests. Installs the Debian packages the tests use when they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
cargo test --locked --all-targets
