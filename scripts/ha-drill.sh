#!/usr/bin/env bash
# Local HA drill: the compose/ha topology as local processes on 127.0.0.1.
#
#   nginx (compose/ha/nginx.conf)  ->  yatagarasu x3 (compose/ha/config.yaml)
#                                        |-> redis-server (shared cache)
#                                        |-> S3 "primary"  (yatagarasu serve-s3)
#                                        '-> S3 "backup"   (yatagarasu serve-s3)
#
# A steady GET load runs through nginx while the drill
#   1. baseline         everything up
#   2. kill-instance    SIGKILLs yatagarasu-2
#   3. kill-primary-s3  SIGKILLs the primary S3 server (replica failover)
#   4. kill-redis       SIGKILLs redis (cache degrades, requests go on)
#   5. restart          restarts redis, the primary S3 server and yatagarasu-2
#   6. rolling-restart  SIGTERM + restart of each instance in turn (graceful drain)
#   7. recovered        everything up again
# and prints `sent=N failed=M max_latency_ms=X` per step and overall.
# Exit status: 0 when no request failed, 1 when some did, 2 on setup errors.
#
# Usage: scripts/ha-drill.sh [--quick] [--step-seconds N] [--concurrency N] [--keep]
#   --quick          4 s steps, whole drill well under 60 s
#   --keep           keep the work dir (logs, configs, per-request results)
# Env: YATAGARASU_BIN (default target/debug/yatagarasu; built if missing)
#
# Only loopback addresses are used; every process started here is stopped on exit.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

STEP=15
CONCURRENCY=4
KEEP=0
MAX_SECONDS=600
while (($#)); do
    case "$1" in
        --quick) STEP=4; MAX_SECONDS=58 ;;
        --step-seconds) STEP="$2"; shift ;;
        --concurrency) CONCURRENCY="$2"; shift ;;
        --keep) KEEP=1 ;;
        -h | --help) sed -n '2,30p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
    shift
done

die() { echo "ha-drill: $*" >&2; exit 2; }
say() { printf '[%5.1fs] %s\n' "$(elapsed)" "$*"; }
T0=$(date +%s.%N)
elapsed() { python3 -c "import time;print(time.time()-$T0)"; }

# ------------------------------------------------------------------ prerequisites
BIN="${YATAGARASU_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/debug/yatagarasu}"
if [[ ! -x "$BIN" && -z "${YATAGARASU_BIN:-}" ]]; then
    echo "building $BIN ..."
    cargo build --bin yatagarasu >&2 || die "cargo build failed"
fi
[[ -x "$BIN" ]] || die "no binary at $BIN (set YATAGARASU_BIN)"
"$BIN" --help 2>/dev/null | grep -qE '^\s+serve-s3\b' || die "$BIN has no serve-s3 subcommand (needed for the S3 servers)"
export PATH="$PATH:/usr/sbin:/sbin"
for tool in nginx redis-server python3 curl; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool not found (apt-get install nginx-light redis-server curl)"
done

WORK="$(mktemp -d "${TMPDIR:-/tmp}/yatagarasu-ha-drill.XXXXXX")"
declare -A PID=()
LOAD_PID=""
WATCHDOG_PID=""

stop_pid() {
    local pid="$1" sig="${2:-TERM}"
    [[ -n "$pid" ]] || return 0
    kill "-$sig" "$pid" 2>/dev/null || return 0
    for _ in $(seq 1 50); do
        kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    [[ -n "$WATCHDOG_PID" ]] && { kill "$WATCHDOG_PID" 2>/dev/null; wait "$WATCHDOG_PID" 2>/dev/null; }
    touch "$WORK/stop-load" 2>/dev/null || true
    [[ -n "$LOAD_PID" ]] && stop_pid "$LOAD_PID"
    for name in "${!PID[@]}"; do stop_pid "${PID[$name]}"; done
    if ((KEEP)) || ((rc != 0 && rc != 1)); then
        echo "work dir kept: $WORK"
    else
        rm -rf "$WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'echo "ha-drill: interrupted" >&2; exit 2' INT TERM

# Bounded duration: the drill aborts itself if it overruns.
(
    sleep "$MAX_SECONDS" </dev/null >/dev/null 2>&1 &
    s=$!
    trap 'kill "$s" 2>/dev/null; exit 0' TERM
    wait "$s"
    echo "ha-drill: over ${MAX_SECONDS}s, aborting" >&2
    kill -TERM $$
) </dev/null >/dev/null &
WATCHDOG_PID=$!

# ------------------------------------------------------------------ ports and data
read -r P_NGINX P_REDIS P_S3A P_S3B P_Y1 P_Y2 P_Y3 P_M1 P_M2 P_M3 < <(python3 - <<'PY'
import socket
socks = []
for _ in range(10):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
)
declare -A P_Y=([1]=$P_Y1 [2]=$P_Y2 [3]=$P_Y3)
declare -A P_M=([1]=$P_M1 [2]=$P_M2 [3]=$P_M3)

KEY=minioadmin
SECRET=minioadmin
mkdir -p "$WORK/s3-primary/data-bucket" "$WORK/s3-backup/data-bucket" "$WORK/redis" "$WORK/nginx/logs" "$WORK/nginx/tmp" "$WORK/logs"
echo 'Primary data!' >"$WORK/s3-primary/data-bucket/test.txt"
echo 'Backup data!' >"$WORK/s3-backup/data-bucket/test.txt"
# Hot objects (same content on both servers, 1-64 KiB): served from the caches
# after the first reads. Fresh objects (one read each, so every step sends
# reads to S3 whatever the caches hold): the body ends with the server that
# holds it, to show which replica answered.
FRESH=$((STEP * 7 * CONCURRENCY * 20 * 6 / 10 + 1000))
python3 - "$WORK" "$FRESH" <<'PY'
import os, sys
work, fresh = sys.argv[1], int(sys.argv[2])
for side in ("s3-primary", "s3-backup"):
    d = os.path.join(work, side, "data-bucket")
    for i in range(16):
        with open(os.path.join(d, f"obj-{i:02d}.bin"), "wb") as f:
            f.write((f"object {i:02d} ".encode() * 8192)[: 1024 * (1 + (i * 4) % 64)])
    for i in range(fresh):
        with open(os.path.join(d, f"fresh-{i:06d}.txt"), "wb") as f:
            f.write(f"fresh object {i:06d}\n".encode() * (1 + i % 50) + f"served-by: {side[3:]}\n".encode())
PY

wait_tcp() { # port seconds
    local deadline=$((SECONDS + $2))
    while ((SECONDS < deadline)); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}

wait_http_ok() { # url seconds
    local deadline=$((SECONDS + $2))
    while ((SECONDS < deadline)); do
        curl -fsS -o /dev/null --max-time 2 "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}

# ------------------------------------------------------------------ components
start_s3() { # primary|backup port
    "$BIN" serve-s3 --listen "127.0.0.1:$2" --root "$WORK/s3-$1" --access-key "$KEY" --secret-key "$SECRET" \
        >>"$WORK/logs/s3-$1.log" 2>&1 &
    PID[s3-$1]=$!
    wait_tcp "$2" 15 || die "S3 $1 did not start (see $WORK/logs/s3-$1.log)"
}

start_redis() {
    redis-server --bind 127.0.0.1 --port "$P_REDIS" --save "" --appendonly no --dir "$WORK/redis" \
        --maxmemory 64mb --maxmemory-policy allkeys-lru --daemonize no --logfile "" \
        >>"$WORK/logs/redis.log" 2>&1 &
    PID[redis]=$!
    wait_tcp "$P_REDIS" 15 || die "redis did not start (see $WORK/logs/redis.log)"
}

# Per-instance config: compose/ha/config.yaml with the compose hostnames and
# ports mapped to loopback. Each substitution must apply (the drill fails
# loudly if the shipped config changes shape).
make_config() { # i
    local i="$1" out="$WORK/yatagarasu-$1.yaml"
    sed -e "s#http://minio-primary:9000#http://127.0.0.1:$P_S3A#" \
        -e "s#http://minio-backup:9000#http://127.0.0.1:$P_S3B#" \
        -e "s#address: \"0.0.0.0:8080\"#address: \"127.0.0.1:${P_Y[$i]}\"#" \
        -e "s#^  port: 9090#  port: ${P_M[$i]}#" \
        compose/ha/config.yaml >"$out"
    for want in "127.0.0.1:$P_S3A" "127.0.0.1:$P_S3B" "127.0.0.1:${P_Y[$i]}" "port: ${P_M[$i]}"; do
        grep -q "$want" "$out" || die "compose/ha/config.yaml changed shape: could not map $want"
    done
}

start_instance() { # i
    local i="$1"
    AWS_ACCESS_KEY_ID="$KEY" AWS_SECRET_ACCESS_KEY="$SECRET" REDIS_URL="redis://127.0.0.1:$P_REDIS" \
        "$BIN" --config "$WORK/yatagarasu-$i.yaml" >>"$WORK/logs/yatagarasu-$i.log" 2>&1 &
    PID[yatagarasu-$i]=$!
    wait_http_ok "http://127.0.0.1:${P_Y[$i]}/ready" 20 || die "yatagarasu-$i not ready (see $WORK/logs/yatagarasu-$i.log)"
}

start_nginx() {
    local p="$WORK/nginx" g="daemon off; pid $WORK/nginx/nginx.pid;"
    sed -E -e "s/server yatagarasu-1:8080/server 127.0.0.1:$P_Y1/" \
        -e "s/server yatagarasu-2:8080/server 127.0.0.1:$P_Y2/" \
        -e "s/server yatagarasu-3:8080/server 127.0.0.1:$P_Y3/" \
        -e "s#^( *)listen 80;#\1listen 127.0.0.1:$P_NGINX;#" \
        -e "s#access_log /dev/stdout;#access_log $p/logs/access.log;#" \
        -e "s#error_log /dev/stderr#error_log $p/logs/error.log#" \
        -e "s#^worker_processes auto;#worker_processes 1;#" \
        -e "s#^http \\{#http {\n    client_body_temp_path $p/tmp/body;\n    proxy_temp_path $p/tmp/proxy;\n    fastcgi_temp_path $p/tmp/fastcgi;\n    uwsgi_temp_path $p/tmp/uwsgi;\n    scgi_temp_path $p/tmp/scgi;#" \
        compose/ha/nginx.conf >"$p/nginx.conf"
    grep -qE 'yatagarasu-[0-9]:' "$p/nginx.conf" && die "compose/ha/nginx.conf changed shape: upstream hostnames left"
    [[ $(id -u) -eq 0 ]] && g="$g user root;"
    nginx -p "$p" -c "$p/nginx.conf" -e "$p/logs/error.log" -g "$g" >>"$WORK/logs/nginx.log" 2>&1 &
    PID[nginx]=$!
    wait_http_ok "http://127.0.0.1:$P_NGINX/nginx-health" 15 || die "nginx did not start (see $p/logs/error.log)"
}

kill9() { # name
    local pid="${PID[$1]:-}"
    [[ -n "$pid" ]] || return 0
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    unset "PID[$1]"
}

graceful_restart() { # i
    local pid="${PID[yatagarasu-$1]}"
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + 35))
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && die "yatagarasu-$1 did not exit within 35s of SIGTERM"
    wait "$pid" 2>/dev/null || true
    start_instance "$1"
}

# ------------------------------------------------------------------ load generator
cat >"$WORK/load.py" <<'PY'
"""Steady GET load through nginx: one line per request to the results file."""
import http.client, os, random, sys, threading, time

port, concurrency, out, stop = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
work = os.path.dirname(out)
bucket = os.path.join(work, "s3-backup", "data-bucket")
hot = sorted(n for n in os.listdir(bucket) if not n.startswith("fresh-"))
expected = {}
for name in hot:
    with open(os.path.join(bucket, name), "rb") as f:
        expected[name] = f.read()
fresh = sorted(n for n in os.listdir(bucket) if n.startswith("fresh-"))
fresh_next = 0
lock = threading.Lock()

def next_fresh():
    global fresh_next
    with lock:
        name = fresh[fresh_next % len(fresh)]
        fresh_next += 1
    return name

fh = open(out, "w", buffering=1)
PER_WORKER_RPS = 20

def worker(seed):
    rnd = random.Random(seed)
    conn = None
    while not os.path.exists(stop):
        key = next_fresh() if rnd.random() < 0.5 else rnd.choice(hot)
        t0 = time.time()
        ok, what = False, ""
        try:
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
            conn.request("GET", f"/data/{key}")
            resp = conn.getresponse()
            body = resp.read()
            if resp.status != 200:
                what = f"http_{resp.status}"
            elif key.startswith("fresh-"):
                tail = body.rsplit(b"served-by: ", 1)[-1]
                ok = tail in (b"primary\n", b"backup\n")
                what = ("fresh-" + tail.decode().strip()) if ok else "bad_body"
            elif key == "test.txt":
                ok = body in (b"Primary data!\n", b"Backup data!\n")
                what = "primary" if body.startswith(b"Primary") else ("backup" if ok else "bad_body")
            else:
                ok = body == expected[key]
                what = "ok" if ok else "bad_body"
            if resp.getheader("connection", "").lower() == "close":
                conn.close(); conn = None
        except Exception as e:  # connection reset, timeout, ...
            what = type(e).__name__
            try:
                conn.close()
            except Exception:
                pass
            conn = None
        t1 = time.time()
        with lock:
            fh.write(f"{t0:.6f} {int(ok)} {(t1 - t0) * 1000:.1f} {what}\n")
        time.sleep(max(0.0, 1.0 / PER_WORKER_RPS - (t1 - t0)))

threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(concurrency)]
for t in threads:
    t.start()
for t in threads:
    t.join()
PY

mark() { # step name
    printf '%s %s\n' "$(date +%s.%N)" "$1" >>"$WORK/steps"
    say "step: $1"
}

# ------------------------------------------------------------------ run
say "starting: S3 primary :$P_S3A, S3 backup :$P_S3B, redis :$P_REDIS"
start_s3 primary "$P_S3A"
start_s3 backup "$P_S3B"
start_redis
for i in 1 2 3; do make_config "$i"; done
for i in 1 2 3; do start_instance "$i"; done
say "instances ready on :$P_Y1 :$P_Y2 :$P_Y3"
start_nginx
say "nginx on :$P_NGINX; load: $CONCURRENCY workers, ${STEP}s per step"
curl -fsS --max-time 5 "http://127.0.0.1:$P_NGINX/data/test.txt" >/dev/null || die "no object through nginx before the drill"

: >"$WORK/steps"
python3 "$WORK/load.py" "$P_NGINX" "$CONCURRENCY" "$WORK/results" "$WORK/stop-load" &
LOAD_PID=$!

mark baseline
sleep "$STEP"

mark kill-instance
kill9 yatagarasu-2
sleep "$STEP"

mark kill-primary-s3
kill9 s3-primary
sleep "$STEP"

mark kill-redis
kill9 redis
sleep "$STEP"

mark restart
start_redis
start_s3 primary "$P_S3A"
start_instance 2
sleep "$STEP"

mark rolling-restart
for i in 1 2 3; do graceful_restart "$i"; done

mark recovered
sleep "$STEP"

printf '%s %s\n' "$(date +%s.%N)" end >>"$WORK/steps"
touch "$WORK/stop-load"
wait "$LOAD_PID" 2>/dev/null || true
LOAD_PID=""

# ------------------------------------------------------------------ report
set +e
python3 - "$WORK/steps" "$WORK/results" <<'PY'
import collections, sys

steps = [l.split(None, 1) for l in open(sys.argv[1]) if l.strip()]
steps = [(float(t), n.strip()) for t, n in steps]
rows = []
for line in open(sys.argv[2]):
    parts = line.split()
    if len(parts) == 4:
        rows.append((float(parts[0]), parts[1] == "1", float(parts[2]), parts[3]))

def step_of(t):
    name = None
    for start, n in steps:
        if t >= start:
            name = n
    return name

per = collections.OrderedDict((n, []) for _, n in steps if n != "end")
for r in rows:
    n = step_of(r[0])
    if n in per:
        per[n].append(r)

def line(label, rs):
    sent = len(rs)
    failed = sum(1 for r in rs if not r[1])
    mx = max((r[2] for r in rs), default=0.0)
    served = collections.Counter(r[3] for r in rs if r[1])
    errs = collections.Counter(r[3] for r in rs if not r[1])
    extra = (f"  uncached reads from primary={served['fresh-primary']} backup={served['fresh-backup']}"
             f"; test.txt primary={served['primary']} backup={served['backup']}")
    if errs:
        extra += "  errors=" + ",".join(f"{k}:{v}" for k, v in errs.most_common(4))
    print(f"{label:<22} sent={sent} failed={failed} max_latency_ms={mx:.0f}{extra}")
    return sent, failed

total_failed = 0
for n, rs in per.items():
    line(f"step={n}", rs)
all_rows = [r for rs in per.values() for r in rs]
sent, total_failed = line("overall", all_rows)
if sent == 0:
    print("no requests were sent")
    sys.exit(2)
sys.exit(1 if total_failed else 0)
PY
rc=$?
if ((rc == 0)); then say "drill passed: 0 failed requests"; else say "drill FAILED (logs: $WORK/logs)"; KEEP=1; fi
exit "$rc"
