#!/usr/bin/env bash
# Runs every fuzz target for its campaign length and keeps libFuzzer's log.
# Several runners may share the queue: each claims the next unclaimed target
# (mkdir is atomic), so `./campaign.sh & ./campaign.sh &` uses two cores.
# Stateful connection targets run 30 minutes, the others 10 (issue 7).
set -uo pipefail
cd "$(dirname "$0")"
mkdir -p work/logs work/claims
export RUSTC_BOOTSTRAP=1
for spec in post_auth_client:1800 post_auth_server:1800 client_input:1800 server_input:1800 \
            wire_decode:600 known_hosts_parse:600 private_key_parse:600 pool_ops:600 reconnect_ops:600; do
    t=${spec%%:*}; secs=${spec##*:}
    mkdir "work/claims/$t" 2>/dev/null || continue
    mkdir -p "work/$t" "artifacts/$t"
    echo "$(date -u +%FT%TZ) start $t for ${secs}s" >> work/logs/campaign.txt
    cargo fuzz run -a "$t" "work/$t" "corpus/$t" -- \
        -max_total_time="$secs" -timeout=20 -rss_limit_mb=2048 -print_final_stats=1 \
        > "work/logs/$t.log" 2>&1
    echo "$(date -u +%FT%TZ) end $t exit $?" >> work/logs/campaign.txt
done
