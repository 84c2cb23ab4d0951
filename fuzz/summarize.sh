#!/bin/bash
# One line per finished campaign log: target, seconds, execs, exec/s, cov, ft, corpus, peak rss, crashes.
cd "$(dirname "$0")/work"
for log in logs/*.log; do
  t=$(basename $log .log)
  grep -q "stat::number_of_executed_units" $log || { echo "$t: running"; continue; }
  execs=$(grep stat::number_of_executed_units $log | awk '{print $2}')
  eps=$(grep stat::average_exec_per_sec $log | awk '{print $2}')
  rss=$(grep stat::peak_rss_mb $log | awk '{print $2}')
  last=$(grep -E "^#[0-9]+" $log | grep "cov:" | tail -1)
  cov=$(echo "$last" | sed -E 's/.*cov: ([0-9]+).*/\1/'); ft=$(echo "$last" | sed -E 's/.*ft: ([0-9]+).*/\1/')
  corp=$(echo "$last" | sed -E 's/.*corp: ([0-9]+\/[0-9]+[a-zA-Z]*).*/\1/')
  crash=$(grep -cE "ERROR: |SUMMARY: |panicked" $log)
  secs=$(grep -E "Done [0-9]+ runs in" $log | sed -E 's/.*in ([0-9]+) second.*/\1/')
  echo "$t | ${secs}s | $execs | $eps | $cov | $ft | $corp | ${rss} MB | $crash"
done
