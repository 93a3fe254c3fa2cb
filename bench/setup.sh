# Sourced by bench/ir.sh and bench/ab.sh: a temp dir with a 4 KiB and a 1 MiB object, the
# bundled S3 server on a random loopback port, and a proxy config in front of it.
#   bench_setup MODE BIN   # MODE hit (memory cache), hit1m (the same, a 1 MiB object, or LARGE_KIB KiB) or pass (cache off)
# Sets D (the dir, with $D/proxy.yaml), S3 (the server's pid), PP (the proxy's
# port) and URL (the object through the proxy).
bench_setup() {
  local mode=$1 bin=$2 ps3 cache
  D=$(mktemp -d /tmp/bench-XXXX); mkdir -p $D/s3/bench
  head -c 4096 /dev/urandom > $D/s3/bench/small-4k.bin
  head -c $((${LARGE_KIB:-1024} * 1024)) /dev/urandom > $D/s3/bench/large-1m.bin
  ps3=$((20000 + RANDOM % 5000)); PP=$((25000 + RANDOM % 5000))
  $bin serve-s3 --listen 127.0.0.1:$ps3 --root $D/s3 --access-key AKIABENCHPROXY001 --secret-key bench-secret-5e4d3c2b1a >/dev/null 2>&1 &
  S3=$!
  if [ "$mode" != pass ]; then cache='cache: { memory: { max_capacity: 67108864, ttl_seconds: 3600 } }'; else cache='# no cache'; fi
  printf '%s\n' "server: { address: \"127.0.0.1:$PP\" }" 'metrics: { enabled: false }' "$cache" 'buckets:' \
    '  - name: bench' '    path_prefix: /bench' \
    "    s3: { bucket: bench, region: us-east-1, endpoint: \"http://127.0.0.1:$ps3\", access_key: AKIABENCHPROXY001, secret_key: bench-secret-5e4d3c2b1a }" > $D/proxy.yaml
  [ "$mode" = pass ] && printf '%s\n' '    cache: { enabled: false }' >> $D/proxy.yaml
  URL=http://127.0.0.1:$PP/bench/small-4k.bin
  [ "$mode" = hit1m ] && URL=http://127.0.0.1:$PP/bench/large-1m.bin
}
