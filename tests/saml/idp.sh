#!/usr/bin/env bash
# idp.sh — starts the pysaml2 IdP of the SAML interop tests (tests/saml/idp.py) in the
# foreground on 127.0.0.1:$SAML_IDP_PORT, with its keys and trusted SP metadata under
# $SAML_IDP_RUN. Creates the venv (PyPI pysaml2) under target/saml-venv on first use.
# Needs python3 (with venv), openssl and the xmlsec1 binary (Debian xmlsec1).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
VENV="${SAML_VENV:-${CARGO_TARGET_DIR:-$REPO/target}/saml-venv}"
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import saml2' 2>/dev/null; then
  python3 -m venv "$VENV" >&2
  "$VENV/bin/pip" install -q --disable-pip-version-check 'pysaml2>=7.5' >&2
fi
: "${SAML_IDP_PORT:=8088}"
: "${SAML_IDP_RUN:=${CARGO_TARGET_DIR:-$REPO/target}/saml-idp-rt}"
export SAML_IDP_PORT SAML_IDP_RUN SAML_IDP_QUIET="${SAML_IDP_QUIET:-1}"
mkdir -p "$SAML_IDP_RUN/sp-metadata.d"
exec "$VENV/bin/python" -W ignore "$HERE/idp.py"
