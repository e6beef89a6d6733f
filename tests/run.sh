#!/usr/bin/env bash
# Runs the whole test suite: every crate's unit and integration tests (against real
# PostgreSQL and Redis on 127.0.0.1), the interop suite (npm oidc-provider upstream,
# npm openid-client downstream) and the admin API's schemathesis run. Starts PostgreSQL
# and Redis if they are down.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

ensure_services() {
  if ! (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; then
    echo "starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
  fi
  if ! (exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null; then
    echo "starting Redis"
    mkdir -p /var/lib/redis /var/log/redis
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
      --dir /var/lib/redis --logfile /var/log/redis/ci.log || true
  fi
  for _ in $(seq 50); do
    (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null && (exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null && return 0
    sleep 0.2
  done
  echo "warning: PostgreSQL or Redis did not come up; their tests will fail in CI" >&2
}
ensure_services

echo "== cargo test (workspace)"
cargo test --workspace --no-fail-fast

echo "== interop (oidc-provider upstream, openid-client downstream)"
HOMEROOM_BIN="${CARGO_TARGET_DIR:-$root/target}/debug/homeroom" bash tests/interop/run.sh

echo "== admin API against its OpenAPI document (PyPI schemathesis; venv in target/schemathesis-venv)"
HOMEROOM_BIN="${CARGO_TARGET_DIR:-$root/target}/debug/homeroom" bash tests/schemathesis/run.sh

echo "== console end to end (headless Debian chromium, playwright-core; screenshots in target/console-screenshots)"
if command -v chromium >/dev/null || [ "${CI:-}" = "true" ]; then
  if [ ! -d tests/console-e2e/node_modules/playwright-core ]; then
    (cd tests/console-e2e && npm ci --no-audit --no-fund)
  fi
  # --workspace keeps the feature set of the run above (no rebuild).
  cargo test --workspace --test console -- --ignored
else
  echo "warning: chromium is not installed (apt-get install -y chromium); console end-to-end test skipped" >&2
fi
