#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 30) with libFuzzer on stable Rust (`-s none`: the address
# sanitizer needs nightly). Needs cargo-fuzz: `cargo install cargo-fuzz`.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds="${1:-30}"
for target in $(cargo fuzz list); do
  echo "== fuzz $target for ${seconds}s"
  cargo fuzz run -s none "$target" -- -max_total_time="$seconds" -print_final_stats=1 2>&1 | grep -E "Done|stat::number_of_executed_units|ERROR|panicked" || true
  test "${PIPESTATUS[0]}" -eq 0
done
