#!/usr/bin/env bash
# Every test sansh has: formatting and lints, unit and property tests, the
# in-memory suites, and the interop suites against real peers (installed
# here first). This is what CI runs (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

./tests/setup.sh

echo "== format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --features sansh/cli --locked -- -D warnings

echo "== unit, property, in-memory and interop tests (optimised, with overflow checks)"
cargo test --workspace --all-targets --features sansh/cli --locked --profile ci

echo "== doc tests, and the API docs build without warnings"
cargo test --workspace --doc --locked --profile ci
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --features sansh/cli,sansh/testing --locked

echo "all tests passed"
