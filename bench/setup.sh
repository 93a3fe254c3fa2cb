# Sourced by bench/ir.sh and bench/ab.sh: a temp dir with a 4 KiB and a 1 MiB object, the
# bundled S3 server on a random loopback port, and a proxy config in front of it.
#   bench_setup MODE BIN   # MODE hit (memory cache), hit1m (the same, a 1 MiB object, or LARGE_KIB KiB),
#                          # pass (cache off) or pass-tls (cache off, the replica on https: nginx
#                          # terminating TLS in front of the S3 server, trusted through ca_file)
# Sets D (the dir, with $D/proxy.yaml), S3 (the pids to stop: the server, and nginx for
# pass-tls), PP (the proxy's port) and URL (the object through the proxy).
bench_setup() {
  local mode=$1 bin=$2 ps3 cache
  D=$(mktemp -d /tmp/bench-XXXX); mkdir -p $D/s3/bench
  head -c 4096 /dev/urandom > $D/s3/bench/small-4k.bin
  head -c $((${LARGE_KIB:-1024} * 1024)) /dev/urandom > $D/s3/bench/large-1m.bin
  ps3=$((20000 + RANDOM % 5000)); PP=$((25000 + RANDOM % 5000))
  $bin serve-s3 --listen 127.0.0.1:$ps3 --root $D/s3 --access-key AKIABENCHPROXY001 --secret-key bench-secret-5e4d3c2b1a >/dev/null 2>&1 &
  S3=$!
  local endpoint="http://127.0.0.1:$ps3" ca=""
  if [ "$mode" = pass-tls ]; then
    command -v nginx >/dev/null || { echo "nginx is needed (apt-get install -y nginx-light)" >&2; return 1; }
    local pt=$((35000 + RANDOM % 3000))
    ( cd $D && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem -subj /CN=bench-ca -days 2 &&
      openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout tls.key -out tls.csr -subj /CN=replica &&
      printf 'subjectAltName=IP:127.0.0.1\n' > tls.ext &&
      openssl x509 -req -in tls.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out tls.pem -days 2 -extfile tls.ext ) >/dev/null 2>&1
    # One worker, keep-alive both ways, the client's Host passed on (the proxy signs for it).
    printf '%s\n' "user root; worker_processes 1; daemon off; pid $D/nginx.pid; error_log $D/nginx.err warn;" \
      'events { worker_connections 4096; }' 'http { access_log off; keepalive_requests 1000000;' \
      "  upstream s3 { server 127.0.0.1:$ps3; keepalive 64; }" \
      "  server { listen 127.0.0.1:$pt ssl; ssl_certificate $D/tls.pem; ssl_certificate_key $D/tls.key;" \
      '    location / { proxy_pass http://s3; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_set_header Host $http_host; } } }' > $D/nginx.conf
    nginx -c $D/nginx.conf -p $D &
    S3="$S3 $!"
    endpoint="https://127.0.0.1:$pt"; ca=", ca_file: $D/ca.pem"
  fi
  if [ "${mode#pass}" = "$mode" ]; then cache='cache: { memory: { max_capacity: 67108864, ttl_seconds: 3600 } }'; else cache='# no cache'; fi
  printf '%s\n' "server: { address: \"127.0.0.1:$PP\" }" 'metrics: { enabled: false }' "$cache" 'buckets:' \
    '  - name: bench' '    path_prefix: /bench' \
    "    s3: { bucket: bench, region: us-east-1, endpoint: \"$endpoint\", access_key: AKIABENCHPROXY001, secret_key: bench-secret-5e4d3c2b1a$ca }" > $D/proxy.yaml
  [ "${mode#pass}" != "$mode" ] && printf '%s\n' '    cache: { enabled: false }' >> $D/proxy.yaml
  URL=http://127.0.0.1:$PP/bench/small-4k.bin
  [ "$mode" = hit1m ] && URL=http://127.0.0.1:$PP/bench/large-1m.bin
}
