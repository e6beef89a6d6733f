#!/usr/bin/env bash
# run.sh — property-based checks of the admin API against its own OpenAPI document
# (/admin/api/openapi.json) with PyPI `schemathesis` (pinned below; venv under
# target/schemathesis-venv, created on first use).
#
# Starts `homeroom serve` on a free 127.0.0.1 port with a temporary SQLite directory, one
# tenant, one provider and an automation app allowed the `homeroom:admin` scope; gets an
# admin token by client credentials; runs every operation of the document through
# schemathesis with the checks: not a 5xx, status code, content type and response schema
# conformance. Bounded: ST_MAX_EXAMPLES per operation, and the run is stopped (and fails)
# after ST_MAX_TIME seconds (default 170: the whole run stays under 3 minutes).
#
# Usage: tests/schemathesis/run.sh            (builds the binary unless HOMEROOM_BIN is set)
#        ST_MAX_EXAMPLES=50 ST_MAX_TIME=150 tests/schemathesis/run.sh
# Needs python3 with venv. Reports (JUnit, ndjson) go to target/schemathesis-report.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
TARGET="${CARGO_TARGET_DIR:-$REPO/target}"
SCHEMATHESIS_VERSION="4.32.5"
VENV="${SCHEMATHESIS_VENV:-$TARGET/schemathesis-venv}"
MAX_EXAMPLES="${ST_MAX_EXAMPLES:-15}"
MAX_TIME="${ST_MAX_TIME:-170}"

command -v python3 >/dev/null || { echo "run.sh: python3 is required" >&2; exit 2; }
if [ ! -x "$VENV/bin/st" ] || [ "$("$VENV/bin/st" --version 2>/dev/null | awk '{print $NF}')" != "$SCHEMATHESIS_VERSION" ]; then
  python3 -m venv "$VENV" >&2
  "$VENV/bin/pip" install -q --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION" >&2
fi

if [ -z "${HOMEROOM_BIN:-}" ]; then
  (cd "$REPO" && cargo build -q -p homeroom)
  HOMEROOM_BIN="$TARGET/debug/homeroom"
fi

work="$(mktemp -d)"
pid=""
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
base="http://127.0.0.1:$port"
secret="st-$(python3 -c 'import secrets; print(secrets.token_urlsafe(24))')"
cat > "$work/homeroom.toml" <<TOML
[server]
listen = "127.0.0.1:$port"
public_url = "$base"
data_dir = "$work"

[store]
directory = "sqlite://$work/homeroom.db"
sessions = "memory://"

[tenants.district]
name = "Schemathesis District"
domains = ["district.test"]
admins = ["it.admin@district.test"]

[providers.district-sso]
tenant = "district"
kind = "oidc"
display_name = "District sign-in"
issuer = "http://127.0.0.1:9/unreachable"
client_id = "homeroom"
client_secret = "upstream-secret"
timeout_secs = 1

[apps.automation]
tenant = "district"
name = "Automation"
client_secret = "$secret"
redirect_uris = ["https://automation.district.test/cb"]
scopes = ["openid", "homeroom:admin"]

[apps.fuzz-target]
tenant = "district"
name = "Fuzz target"
client_secret = "$secret"
redirect_uris = ["https://fuzz.district.test/cb"]

[limits]
enabled = false
TOML

RUST_LOG="${RUST_LOG:-warn}" "$HOMEROOM_BIN" serve --config "$work/homeroom.toml" > "$work/server.log" 2>&1 &
pid=$!
for _ in $(seq 100); do
  if curl -fsS "$base/admin/api/openapi.json" -o /dev/null 2>/dev/null; then break; fi
  kill -0 "$pid" 2>/dev/null || { cat "$work/server.log" >&2; echo "run.sh: homeroom did not start" >&2; exit 1; }
  sleep 0.2
done

token="$(curl -fsS -u "automation:$secret" -d grant_type=client_credentials -d scope=homeroom:admin \
  "$base/oauth2/token" | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')"

# Real ids, so generated requests reach past "not found" into the handlers (the automation
# app itself is never patched: its token would stop working).
account="$(curl -fsS -H "Authorization: Bearer $token" "$base/admin/api/accounts?q=it.admin" \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["id"])')"
cat > "$work/schemathesis.toml" <<TOML
[[operations]]
include-path-regex = "^/admin/api/accounts/"
parameters = { "path.id" = "$account" }

[[operations]]
include-path-regex = "^/admin/api/providers/"
parameters = { "path.id" = "district-sso" }

[[operations]]
include-path-regex = "^/admin/api/apps/"
parameters = { "path.id" = "fuzz-target" }
TOML

report="$TARGET/schemathesis-report"
mkdir -p "$report"
set +e
cd "$work"
SCHEMATHESIS_HOOKS=hooks PYTHONPATH="$HERE" PYTHONDONTWRITEBYTECODE=1 \
  timeout --signal=INT --kill-after=10 "$MAX_TIME" \
  "$VENV/bin/st" --config-file "$work/schemathesis.toml" run "$base/admin/api/openapi.json" \
  --url "$base" \
  -H "Authorization: Bearer $token" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
  --max-examples "$MAX_EXAMPLES" \
  --generation-database none \
  --request-timeout 10 \
  --workers 1 \
  --seed "${ST_SEED:-20240907}" \
  --no-color \
  --report junit --report-dir "$report"
status=$?
set -e
if [ "$status" -ne 0 ]; then
  echo "== homeroom server log (last 50 lines)" >&2
  tail -n 50 "$work/server.log" >&2
fi
exit "$status"
