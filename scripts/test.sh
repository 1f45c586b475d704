#!/usr/bin/env bash
# The whole test suite: unit tests, integration tests (real servers on loopback) and the binary's own tests.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --locked --all-targets
