#!/usr/bin/env bash
# The one test command: installs what the tests need, then runs every check.
#   scripts/test.sh            # everything (what CI runs)
#   SKIP_LINT=1 scripts/test.sh  # skip fmt/clippy for a quicker local run
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# --- system packages (Debian) -------------------------------------------------
need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || need+=(redis-tools)  # cluster create, SETRANGE in the cache tests
command -v openssl >/dev/null 2>&1 || need+=(openssl)  # certificates for the rediss:// test
command -v nginx >/dev/null 2>&1 || need+=(nginx-light)
command -v docker-compose >/dev/null 2>&1 || need+=(docker-compose)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v python3 >/dev/null 2>&1 || need+=(python3 python3-venv)
command -v rclone >/dev/null 2>&1 || need+=(rclone)  # the S3 API tests drive it (tests/integration/rclone.rs)
command -v s3cmd >/dev/null 2>&1 || need+=(s3cmd)  # the S3 API tests drive it (tests/integration/s3_api.rs)
command -v chromium >/dev/null 2>&1 || need+=(chromium)  # a real browser for the CORS tests (tests/integration/browser.rs)
if [ ${#need[@]} -gt 0 ]; then
  echo "==> installing ${need[*]}"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# --- moto's STS server (role-assumption tests, issue 14), in its own venv -----
MOTO_VENV="${XDG_CACHE_HOME:-$HOME/.cache}/yatagarasu-ci/moto-venv"
if [ ! -x "$MOTO_VENV/bin/moto_server" ]; then
  echo "==> installing moto[server] into $MOTO_VENV"
  python3 -m venv "$MOTO_VENV"
  "$MOTO_VENV/bin/pip" install -q "moto[server]"
fi
export YATAGARASU_MOTO_SERVER="$MOTO_VENV/bin/moto_server"
# --- S3 clients for the S3 API tests (aws-cli, boto3) in a venv ---------------
export YATAGARASU_TOOLS_VENV=${YATAGARASU_TOOLS_VENV:-$PWD/.venv-tools}
if ! "$YATAGARASU_TOOLS_VENV/bin/python" -c 'import boto3, awscli' >/dev/null 2>&1; then
  echo "==> installing awscli and boto3 into $YATAGARASU_TOOLS_VENV"
  python3 -m venv "$YATAGARASU_TOOLS_VENV"
  "$YATAGARASU_TOOLS_VENV/bin/pip" install -q awscli boto3
fi

# --- Rust tools ---------------------------------------------------------------
if ! cargo nextest --version >/dev/null 2>&1; then
  echo "==> installing cargo-nextest"
  cargo install cargo-nextest --locked
fi

export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
export RUST_BACKTRACE=${RUST_BACKTRACE:-1}
# A one-off build gains nothing from incremental state (~2 GiB of target/);
# set CARGO_INCREMENTAL=1 to keep it when you rerun this script often.
export CARGO_INCREMENTAL=${CARGO_INCREMENTAL:-0}

# The build and tests need a few GiB of disk; say so plainly rather than
# failing in the linker with "No space left on device".
target_parent=$(cd "${CARGO_TARGET_DIR:-.}" 2>/dev/null && pwd || pwd)
free_kib=$(df -Pk "$target_parent" | awk 'NR==2 {print $4}')
if [ -n "$free_kib" ] && [ "$free_kib" -lt $((4 * 1024 * 1024)) ]; then
  echo "warning: only $((free_kib / 1024)) MiB free under $target_parent; the build and tests need about 4 GiB" >&2
fi

if [ -z "${SKIP_LINT:-}" ]; then
  echo "==> cargo fmt --check"
  cargo fmt --all -- --check
  echo "==> cargo clippy"
  cargo clippy --workspace --all-targets --locked -- -D warnings
fi

echo "==> build (tests, examples, binary)"
cargo build --workspace --all-targets --locked

echo "==> tests"
cargo nextest run --workspace --all-targets --locked --no-fail-fast

echo "==> doc tests"
cargo test --workspace --doc --locked

if [ -x scripts/check-deploy.sh ] || { echo "error: scripts/check-deploy.sh is missing or not executable: the deployment checks cannot run" >&2; exit 1; }; then
  echo "==> deployment checks"
  target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
  YATAGARASU_BIN="$target_dir/debug/yatagarasu" scripts/check-deploy.sh
fi
echo "==> all checks passed"
