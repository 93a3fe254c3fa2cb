#!/usr/bin/env bash
# The benchmark suite in one command: installs wrk and nginx if missing
# (Debian), builds the release proxy, runs every scenario on loopback and
# prints one Markdown table (with the date and commit) at the end.
#
#   bench/run.sh                                   # full run (several minutes)
#   bench/run.sh --quick                           # short runs
#   bench/run.sh --only cache-hit --access-log     # both sides writing an access log
#   bench/run.sh --only stream,micro --connections 32
#   bench/run.sh --help
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
if [ ${#missing[@]} -gt 0 ]; then
    sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    echo "installing ${missing[*]}" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

cargo build --release -p yatagarasu --bin yatagarasu
# Both bench binaries: the suite and `hyper-floor` (a reference server it starts).
cargo build --release -p yatagarasu-bench --bins
exec cargo run --release -q -p yatagarasu-bench --bin yatagarasu-bench -- "$@"
