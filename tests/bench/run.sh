#!/usr/bin/env bash
# Builds the release binaries and runs the side-by-side benchmarks
# (tests/bench/compare.py; see its docstring and the README's table).
# Needs sshd and ssh (tests/setup.sh installs them) and, for the asyncssh
# columns, asyncssh. Arguments go to compare.py (--runs N, --quick,
# --only downloads|uploads|connect|pooled|memory).
set -euo pipefail
cd "$(dirname "$0")/../.."
./tests/setup.sh >/dev/null
cargo build --release --locked -p sansh --features cli --bin sansh
cargo build --release --locked -p sansh --features tokio,testing --example idle_connections
exec python3 tests/bench/compare.py "$@"
