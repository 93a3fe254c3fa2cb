#!/usr/bin/env bash
# Instructions per request of the proxy, counted by callgrind: a figure that does
# not move with the machine's load (unlike req/s), for A/B of a hot-path change.
# User space only (the kernel's socket work is not counted); valgrind hides
# SHA-NI, so SigV4 signing counts more than it costs on real hardware.
#   bench/ir.sh hit  [BIN] [LD_PRELOAD lib]   # 4 KiB memory-cache hits
#   bench/ir.sh pass [BIN]                    # 4 KiB pass-through (cache off)
#   KEEP=1 bench/ir.sh hit                    # keep the callgrind file: callgrind_annotate --inclusive=yes FILE
#   IR_RUST_LOG=info bench/ir.sh hit          # with the access log on (to the proxy's stdout, a file here)
set -u
MODE=${1:-hit}; BIN=${2:-target/release/yatagarasu}; PRE=${3:-}
command -v valgrind >/dev/null || { echo "valgrind is needed (apt-get install -y valgrind)" >&2; exit 1; }
command -v wrk >/dev/null || { echo "wrk is needed (apt-get install -y wrk)" >&2; exit 1; }
D=$(mktemp -d /tmp/ir-XXXX); mkdir -p $D/s3/bench
head -c 4096 /dev/urandom > $D/s3/bench/small-4k.bin
PS3=$((20000 + RANDOM % 5000)); PP=$((25000 + RANDOM % 5000))
$BIN serve-s3 --listen 127.0.0.1:$PS3 --root $D/s3 --access-key AKIABENCHPROXY001 --secret-key bench-secret-5e4d3c2b1a >/dev/null 2>&1 &
S3=$!
if [ $MODE = hit ]; then CACHE='cache: { memory: { max_capacity: 67108864, ttl_seconds: 3600 } }'; else CACHE='# no cache'; fi
printf '%s\n' "server: { address: \"127.0.0.1:$PP\" }" 'metrics: { enabled: false }' "$CACHE" 'buckets:' \
  '  - name: bench' '    path_prefix: /bench' \
  "    s3: { bucket: bench, region: us-east-1, endpoint: \"http://127.0.0.1:$PS3\", access_key: AKIABENCHPROXY001, secret_key: bench-secret-5e4d3c2b1a }" > $D/proxy.yaml
[ $MODE = pass ] && printf '%s\n' '    cache: { enabled: false }' >> $D/proxy.yaml
LD_PRELOAD=$PRE RUST_LOG=${IR_RUST_LOG:-info,yatagarasu::access=off} valgrind --tool=callgrind --callgrind-out-file=$D/cg.out --dump-instr=no $BIN -c $D/proxy.yaml >$D/proxy.log 2>&1 &
P=$!
for i in $(seq 300); do curl -s -o /dev/null http://127.0.0.1:$PP/bench/small-4k.bin && break; sleep 0.2; done
wrk -t1 -c8 -d3s http://127.0.0.1:$PP/bench/small-4k.bin >/dev/null
callgrind_control -z $P >/dev/null
out=$(wrk -t1 -c8 -d10s http://127.0.0.1:$PP/bench/small-4k.bin)
callgrind_control -d $P >/dev/null
n=$(echo "$out" | awk '/requests in/{print $1}')
sleep 1
f=$(ls -t $D/cg.out* | head -1)
ir=$(grep -h "^summary:\|^totals:" $f | head -1 | awk '{print $2}')
echo "$MODE $(basename $BIN) ${PRE:+mimalloc} requests=$n Ir/request=$((ir / n))"
kill $P $S3 2>/dev/null; wait 2>/dev/null
[ -n "${KEEP:-}" ] && echo "kept $f" || rm -rf $D
