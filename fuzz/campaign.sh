#!/usr/bin/env bash
# Runs every fuzz target for its campaign length and keeps libFuzzer's log.
# Several runners may share the queue: each claims the next unclaimed target
# (mkdir is atomic), so `./campaign.sh & ./campaign.sh &` uses two cores.
# Stateful targets (connections, and the pool/reconnect operation sequences)
# run 30 minutes, the others 10 (issue 7). Connection scripts may be up to
# 16 KiB, so payloads past the 4 KiB default reach the decoders.
# Arguments TARGET:SECONDS... replace the list (e.g. a re-run of the targets
# whose code changed).
set -uo pipefail
cd "$(dirname "$0")"
mkdir -p work/logs work/claims
export RUSTC_BOOTSTRAP=1
specs=(post_auth_client:1800 post_auth_server:1800 client_input:1800 server_input:1800
       pool_ops:1800 reconnect_ops:1800 wire_decode:600 known_hosts_parse:600 private_key_parse:600)
[ $# -gt 0 ] && specs=("$@")
for spec in "${specs[@]}"; do
    t=${spec%%:*}; secs=${spec##*:}
    mkdir "work/claims/$t" 2>/dev/null || continue
    mkdir -p "work/$t" "artifacts/$t"
    echo "$(date -u +%FT%TZ) start $t for ${secs}s" >> work/logs/campaign.txt
    case $t in client_input|server_input|post_auth_*) max_len=16384 ;; *) max_len=4096 ;; esac
    cargo fuzz run -a "$t" "work/$t" "corpus/$t" -- \
        -max_total_time="$secs" -max_len="$max_len" -timeout=20 -rss_limit_mb=2048 -print_final_stats=1 \
        > "work/logs/$t.log" 2>&1
    echo "$(date -u +%FT%TZ) end $t exit $?" >> work/logs/campaign.txt
done
