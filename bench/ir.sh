#!/usr/bin/env bash
# Instructions per request of the proxy, counted by callgrind: a figure that does
# not move with the machine's load (unlike req/s), for A/B of a hot-path change.
# User space only (the kernel's socket work is not counted); valgrind hides
# SHA-NI, so SigV4 signing counts more than it costs on real hardware.
#   bench/ir.sh hit  [BIN] [LD_PRELOAD lib]   # 4 KiB memory-cache hits
#   bench/ir.sh pass [BIN]                    # 4 KiB pass-through (cache off)
#   bench/ir.sh pass-tls [BIN]                # the same to an https replica (nginx TLS in front)
#   KEEP=1 bench/ir.sh hit                    # keep the callgrind file: bench/cg.py FILE N self (or callgrind_annotate --inclusive=yes FILE)
#   IR_RUST_LOG=info bench/ir.sh hit          # with the access log on (to the proxy's stdout, a file here)
set -u
MODE=${1:-hit}; BIN=${2:-target/release/yatagarasu}; PRE=${3:-}
command -v valgrind >/dev/null || { echo "valgrind is needed (apt-get install -y valgrind)" >&2; exit 1; }
command -v wrk >/dev/null || { echo "wrk is needed (apt-get install -y wrk)" >&2; exit 1; }
. "$(dirname "$0")/setup.sh"
bench_setup "$MODE" "$BIN"
LD_PRELOAD=$PRE RUST_LOG=${IR_RUST_LOG:-info,yatagarasu::access=off} valgrind --tool=callgrind --callgrind-out-file=$D/cg.out --dump-instr=no $BIN -c $D/proxy.yaml >$D/proxy.log 2>&1 &
P=$!
for i in $(seq 300); do curl -s -o /dev/null $URL && break; sleep 0.2; done
wrk -t1 -c8 -d3s $URL >/dev/null
callgrind_control -z $P >/dev/null
out=$(wrk -t1 -c8 -d10s $URL)
callgrind_control -d $P >/dev/null
n=$(echo "$out" | awk '/requests in/{print $1}')
sleep 1
f=$(ls -t $D/cg.out* | head -1)
ir=$(grep -h "^summary:\|^totals:" $f | head -1 | awk '{print $2}')
echo "$MODE $(basename $BIN) ${PRE:+mimalloc} requests=$n Ir/request=$((ir / n))"
kill $P $S3 2>/dev/null; wait 2>/dev/null
[ -n "${KEEP:-}" ] && echo "kept $f" || rm -rf $D
