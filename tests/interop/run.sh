#!/usr/bin/env bash
# run.sh — Homeroom interop suite: npm oidc-provider (upstream OP) -> Homeroom -> npm openid-client (app).
# Usage: tests/interop/run.sh            (from any directory; idempotent)
#        HOMEROOM_BIN=/path/to/homeroom tests/interop/run.sh   (skip the cargo build)
# Installs the pinned npm packages (package-lock.json) into tests/interop/node_modules, builds the
# binary with `cargo build -p homeroom` unless HOMEROOM_BIN is set, runs `node --test` on the suite
# and exits with its status. Everything listens on 127.0.0.1; nothing but npm packages is downloaded.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"

command -v node >/dev/null || { echo "run.sh: node (>= 20.19) is required" >&2; exit 2; }
command -v npm >/dev/null || { echo "run.sh: npm is required" >&2; exit 2; }

# Reinstall only when the lock file changed since the last install (npm ci wipes node_modules).
stamp="$HERE/node_modules/.interop-lock.sha256"
want="$(sha256sum "$HERE/package-lock.json" | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  (cd "$HERE" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  echo "$want" > "$stamp"
fi

if [ -z "${HOMEROOM_BIN:-}" ]; then
  (cd "$REPO" && cargo build -p homeroom)
  export HOMEROOM_BIN="${CARGO_TARGET_DIR:-$REPO/target}/debug/homeroom"
else
  HOMEROOM_BIN="$(cd "$(dirname "$HOMEROOM_BIN")" && pwd)/$(basename "$HOMEROOM_BIN")"
  export HOMEROOM_BIN
fi

# Explicit file list (a directory argument means different things to Node 20 and Node 22).
cd "$REPO"
set +e
node --test "$HERE"/*.test.mjs
status=$?
exit "$status"
