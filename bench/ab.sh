#!/usr/bin/env bash
# A/B of `server.connection_threads` (or, with VAR=, any YATAGARASU__ override) on one binary:
# runs interleaved, each a wrk run against the proxy in front of the bundled S3 server,
# printing req/s, wrk's p99 latency, the proxy's CPU seconds per 100k requests (from /proc/PID/stat,
# user + system) and the share of it in user space. Use several rounds: the VM's
# speed moves between runs, only interleaved pairs compare.
#   bench/ab.sh hit  32 8 auto 0 auto 0      # 4 KiB memory-cache hits, -c32, 8 s per run
#   bench/ab.sh pass 64 8 auto 0 auto 0      # 4 KiB pass-through (cache off)
#   bench/ab.sh pass-tls 32 6 auto 0         # the same to an https replica (nginx TLS in front of the S3 server)
#   BIN=path/to/yatagarasu bench/ab.sh ...   # another build (default target/release/yatagarasu)
#   VAR=YATAGARASU__CACHE__MEMORY__SENDFILE_MIN_SIZE bench/ab.sh hit1m 32 5 65536 0   # 1 MiB hits, sendfile on/off
set -u
MODE=${1:?hit|hit1m|pass|pass-tls}; C=${2:?connections}; T=${3:?seconds}; shift 3
BIN=${BIN:-target/release/yatagarasu}
VAR=${VAR:-YATAGARASU__SERVER__CONNECTION_THREADS}
command -v wrk >/dev/null || { echo "wrk is needed (apt-get install -y wrk)" >&2; exit 1; }
. "$(dirname "$0")/setup.sh"
bench_setup "$MODE" "$BIN"
trap 'kill $S3 2>/dev/null; rm -rf $D' EXIT
for setting in "$@"; do
  env RUST_LOG=warn "$VAR=$setting" $BIN -c $D/proxy.yaml >$D/proxy.log 2>&1 &
  P=$!
  for _ in $(seq 100); do curl -s -o /dev/null $URL && break; sleep 0.1; done
  wrk -t1 -c$C -d2s $URL >/dev/null   # warm-up
  read -r u0 s0 < <(awk '{print $14, $15}' /proc/$P/stat)
  out=$(wrk -t1 -c$C -d${T}s --latency $URL)
  read -r u1 s1 < <(awk '{print $14, $15}' /proc/$P/stat)
  n=$(echo "$out" | awk '/requests in/{print $1}')
  rps=$(echo "$out" | awk '/Requests\/sec/{print $2}')
  p99=$(echo "$out" | awk '$1 == "99%" {print $2}')
  python3 -c "
u, s, n = $u1 - $u0, $s1 - $s0, $n
tck = $(getconf CLK_TCK)
print(f'${VAR#YATAGARASU__}=$setting $MODE -c$C req/s=$rps p99=$p99 cpu_s_per_100k={(u + s) / tck / n * 1e5:.2f} user_share={u / max(1, u + s):.2f}')"
  kill $P; wait $P 2>/dev/null
done
