#!/usr/bin/env bash
# RSS the memory tier takes per cached object: N objects of SIZE bytes, each fetched once
# through the proxy (a miss that stores it), the proxy's VmRSS before and after.
#   bench/mem.sh [BIN]               # 4,000 objects of 4 KiB
#   N=10000 SIZE=1024 bench/mem.sh   # other counts and sizes
# Compare with what the tier weighs an entry at (CachedObject::weight): the body plus a few
# hundred bytes for its headers.
set -u
BIN=${1:-target/release/yatagarasu}; N=${N:-4000}; SIZE=${SIZE:-4096}
. "$(dirname "$0")/setup.sh"
bench_setup hit "$BIN"
trap 'kill $P $S3 2>/dev/null; rm -rf $D' EXIT
for i in $(seq "$N"); do head -c "$SIZE" /dev/urandom > $D/s3/bench/o$i.bin; done
RUST_LOG=warn $BIN -c $D/proxy.yaml >$D/proxy.log 2>&1 &
P=$!
for _ in $(seq 100); do curl -s -o /dev/null $URL && break; sleep 0.1; done
rss() { awk '/VmRSS/{print $2}' /proc/$P/status; }
before=$(rss)
for i in $(seq "$N"); do printf 'url = "http://127.0.0.1:%s/bench/o%s.bin"\noutput = "/dev/null"\n' $PP $i; done > $D/curl.cfg
curl -s --no-progress-meter --parallel --parallel-max 8 -K $D/curl.cfg 2>/dev/null
hits=$(curl -s -o /dev/null -w '%header{x-cache}' http://127.0.0.1:$PP/bench/o1.bin)
after=$(rss)
echo "objects=$N size=$SIZE rss_before=${before}KiB rss_after=${after}KiB per_object=$(( (after - before) * 1024 / N ))B (o1 again: $hits)"
