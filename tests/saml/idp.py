#!/usr/bin/env python3
"""idp.py — upstream SAML 2.0 Identity Provider for Homeroom's interop tests, built on PyPI `pysaml2`
(adapted from shared/peers/saml-idp.py: run directory and port from the environment, plus an
IdP-initiated endpoint GET /idp/unsolicited?sp=ENTITY_ID&user=alice&relay_state=ALIAS).
(the IdP role of saml2.server.Server; signing/verification by the xmlsec1 binary).

What it does
  * Listens on http://127.0.0.1:${SAML_IDP_PORT:-8088} (127.0.0.1 only).
  * entityID / metadata:   http://127.0.0.1:8088/idp/metadata
    SSO (HTTP-Redirect):   http://127.0.0.1:8088/idp/sso/redirect
    SSO (HTTP-POST):       http://127.0.0.1:8088/idp/sso/post
    login form POST:       http://127.0.0.1:8088/idp/login   (fields: key, username, password)
  * Answers every AuthnRequest with a SAML Response over the HTTP-POST binding (auto-submit HTML form
    to the SP's AssertionConsumerService), with BOTH the <Response> and the <Assertion> signed
    (RSA-SHA256 / SHA-256), NameID per the request's NameIDPolicy (default transient; also persistent,
    emailAddress, unspecified), attributes uid, mail, givenName, sn, displayName, eduPersonAffiliation
    (urn:oid names, NameFormat uri).
  * Accounts: alice / wonderland, bob / builder.
  * Trusted SPs = every *.xml SP metadata file in $PEERS_HOME/run/saml/sp-metadata.d/ (re-read when an
    unknown SP shows up, so SPs can register themselves by dropping a file there; saml-sp-login.py does).
    Add your broker's SP metadata there too.
  * Signing key/cert: $PEERS_HOME/run/saml/idp.key / idp.crt (self-signed, made on first start with openssl).

How to run (after ./install.sh python):
  ./saml-idp.sh                     # foreground
  ./saml-idp.sh > /tmp/idp.log 2>&1 & echo $! > /tmp/idp.pid
Then: ./saml-sp-login.sh   (scripted SP-initiated login; prints the verified assertion)
"""
import html
import os
import secrets
import subprocess
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import warnings
warnings.filterwarnings("ignore", category=DeprecationWarning)
try:
    from cryptography.utils import CryptographyDeprecationWarning
    warnings.filterwarnings("ignore", category=CryptographyDeprecationWarning)
except Exception:  # pragma: no cover
    pass

from saml2 import BINDING_HTTP_POST, BINDING_HTTP_REDIRECT
from saml2.config import IdPConfig
from saml2.metadata import create_metadata_string
from saml2.saml import (AUTHN_PASSWORD_PROTECTED, NAME_FORMAT_URI, NAMEID_FORMAT_EMAILADDRESS,
                        NAMEID_FORMAT_PERSISTENT, NAMEID_FORMAT_TRANSIENT, NAMEID_FORMAT_UNSPECIFIED, NameID)
from saml2.server import Server
from saml2.xmldsig import DIGEST_SHA256, SIG_RSA_SHA256
import hashlib

HOST = "127.0.0.1"
PORT = int(os.environ.get("SAML_IDP_PORT", "8088"))
BASE = os.environ.get("SAML_IDP_BASE", f"http://{HOST}:{PORT}")
RUN = os.environ.get("SAML_IDP_RUN") or os.path.join(os.environ.get("PEERS_HOME", "/tmp/peers-rt"), "run", "saml")
SPDIR = os.path.join(RUN, "sp-metadata.d")
KEY = os.path.join(RUN, "idp.key")
CRT = os.path.join(RUN, "idp.crt")
XMLSEC = os.environ.get("XMLSEC_BINARY", "/usr/bin/xmlsec1")

USERS = {
    "alice": {"password": "wonderland", "attrs": {"uid": ["alice"], "mail": ["alice@example.test"], "givenName": ["Alice"],
                                                   "sn": ["Liddell"], "displayName": ["Alice Liddell"],
                                                   "eduPersonAffiliation": ["member", "staff"]}},
    "bob": {"password": "builder", "attrs": {"uid": ["bob"], "mail": ["bob@example.test"], "givenName": ["Bob"],
                                             "sn": ["Builder"], "displayName": ["Bob Builder"],
                                             "eduPersonAffiliation": ["member"]}},
}


def ensure_keys():
    os.makedirs(SPDIR, exist_ok=True)
    if not (os.path.exists(KEY) and os.path.exists(CRT)):
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650",
                        "-subj", "/CN=peers-test-idp", "-keyout", KEY, "-out", CRT], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def make_server():
    sp_files = sorted(os.path.join(SPDIR, f) for f in os.listdir(SPDIR) if f.endswith(".xml"))
    conf = {
        "entityid": f"{BASE}/idp/metadata",
        "name": "peers test IdP (pysaml2)",
        "service": {"idp": {
            "name": "peers test IdP (pysaml2)",
            "endpoints": {"single_sign_on_service": [(f"{BASE}/idp/sso/redirect", BINDING_HTTP_REDIRECT),
                                                     (f"{BASE}/idp/sso/post", BINDING_HTTP_POST)]},
            "policy": {"default": {"lifetime": {"minutes": 15}, "attribute_restrictions": None,
                                   "name_form": NAME_FORMAT_URI}},
            "name_id_format": [NAMEID_FORMAT_TRANSIENT, NAMEID_FORMAT_PERSISTENT, NAMEID_FORMAT_EMAILADDRESS,
                               NAMEID_FORMAT_UNSPECIFIED],
            "want_authn_requests_signed": False,
            "sign_response": True,
            "sign_assertion": True,
        }},
        "key_file": KEY,
        "cert_file": CRT,
        "xmlsec_binary": XMLSEC,
        "metadata": {"local": sp_files} if sp_files else {},
        "allow_unknown_attributes": True,
    }
    cfg = IdPConfig()
    cfg.load(conf)
    return Server(config=cfg), sp_files


ensure_keys()
LOCK = threading.Lock()
IDP, SP_FILES = make_server()
PENDING = {}  # key -> (AuthnRequest message, RelayState, time)


def idp_for(sp_entity):
    """Return a Server that knows sp_entity (re-reading sp-metadata.d if needed)."""
    global IDP, SP_FILES
    with LOCK:
        if sp_entity not in IDP.metadata.keys():
            IDP, SP_FILES = make_server()
        return IDP


def page(title, body, status=200):
    return status, "text/html; charset=utf-8", (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
                                                f"</title></head><body><h1>{html.escape(title)}</h1>{body}</body></html>").encode()


def login_form(key, error=""):
    err = f"<p class='error'>{html.escape(error)}</p>" if error else ""
    return page("IdP sign-in", f"""{err}<form method="post" action="/idp/login">
<input type="hidden" name="key" value="{html.escape(key)}">
<input name="username" placeholder="username" autofocus> <input name="password" type="password" placeholder="password">
<button type="submit">Sign in</button></form>""", 401 if error else 200)


def handle_authn_request(saml_request, binding, relay_state, sigalg=None, signature=None):
    # peek at the issuer first so a freshly registered SP can be loaded
    probe = IDP.parse_authn_request(saml_request, binding)
    sp = probe.message.issuer.text.strip()
    idp = idp_for(sp)
    req = idp.parse_authn_request(saml_request, binding, relay_state=relay_state, sigalg=sigalg, signature=signature)
    key = secrets.token_urlsafe(24)
    with LOCK:
        now = time.time()
        for k in [k for k, v in PENDING.items() if now - v[2] > 600]:
            del PENDING[k]
        PENDING[key] = (req.message, relay_state, now)
    return login_form(key)


def name_id_for(user, fmt, sp):
    if fmt == NAMEID_FORMAT_EMAILADDRESS:
        return NameID(format=fmt, text=USERS[user]["attrs"]["mail"][0])
    if fmt == NAMEID_FORMAT_PERSISTENT:
        text = hashlib.sha256(f"{sp}|{user}|peers-salt".encode()).hexdigest()[:32]
        return NameID(format=fmt, text=text, sp_name_qualifier=sp, name_qualifier=f"{BASE}/idp/metadata")
    if fmt == NAMEID_FORMAT_UNSPECIFIED:
        return NameID(format=fmt, text=user)
    return NameID(format=NAMEID_FORMAT_TRANSIENT, text="_" + secrets.token_hex(16),
                  sp_name_qualifier=sp, name_qualifier=f"{BASE}/idp/metadata")


def handle_login(form):
    key = form.get("key", "")
    with LOCK:
        pending = PENDING.get(key)
    if not pending:
        return page("Error", "<p>unknown or expired login session</p>", 400)
    user, pw = form.get("username", ""), form.get("password", "")
    if user not in USERS or not secrets.compare_digest(USERS[user]["password"].encode(), pw.encode()):
        return login_form(key, "invalid username or password")
    with LOCK:
        PENDING.pop(key, None)
    authn_req, relay_state, _ = pending
    sp = authn_req.issuer.text.strip()
    idp = idp_for(sp)
    args = idp.response_args(authn_req, [BINDING_HTTP_POST])
    policy = authn_req.name_id_policy
    fmt = policy.format if policy is not None and policy.format else NAMEID_FORMAT_TRANSIENT
    resp = idp.create_authn_response(
        identity=USERS[user]["attrs"], userid=user, name_id=name_id_for(user, fmt, sp),
        authn={"class_ref": AUTHN_PASSWORD_PROTECTED, "authn_auth": f"{BASE}/idp/metadata"},
        sign_response=True, sign_assertion=True, sign_alg=SIG_RSA_SHA256, digest_alg=DIGEST_SHA256,
        in_response_to=args["in_response_to"], destination=args["destination"], sp_entity_id=args["sp_entity_id"],
    )
    info = idp.apply_binding(BINDING_HTTP_POST, str(resp), args["destination"], relay_state, response=True)
    body = info["data"]
    return 200, "text/html; charset=utf-8", body.encode() if isinstance(body, str) else body


def handle_unsolicited(q):
    """IdP-initiated: a signed Response without InResponseTo, POSTed to the SP's ACS."""
    sp = q.get("sp", "")
    user = q.get("user", "alice")
    if user not in USERS:
        return page("Error", "<p>unknown user</p>", 400)
    idp = idp_for(sp)
    acs = idp.metadata.assertion_consumer_service(sp, binding=BINDING_HTTP_POST)
    if not acs:
        return page("Error", "<p>unknown SP</p>", 400)
    destination = acs[0]["location"]
    resp = idp.create_authn_response(
        identity=USERS[user]["attrs"], userid=user, name_id=name_id_for(user, NAMEID_FORMAT_PERSISTENT, sp),
        authn={"class_ref": AUTHN_PASSWORD_PROTECTED, "authn_auth": f"{BASE}/idp/metadata"},
        sign_response=True, sign_assertion=True, sign_alg=SIG_RSA_SHA256, digest_alg=DIGEST_SHA256,
        in_response_to=None, destination=destination, sp_entity_id=sp,
    )
    info = idp.apply_binding(BINDING_HTTP_POST, str(resp), destination, q.get("relay_state", ""), response=True)
    body = info["data"]
    return 200, "text/html; charset=utf-8", body.encode() if isinstance(body, str) else body


_MD_CACHE = {}


def _metadata_bytes():
    # built once per Server instance (building it costs ~50 ms of pysaml2 work)
    with LOCK:
        key = id(IDP)
        if key not in _MD_CACHE:
            md = create_metadata_string(None, config=IDP.config)
            _MD_CACHE.clear()
            _MD_CACHE[key] = md if isinstance(md, bytes) else md.encode()
        return 200, "application/samlmetadata+xml", _MD_CACHE[key]


class Handler(BaseHTTPRequestHandler):
    server_version = "peers-saml-idp/1"

    def log_message(self, fmt, *args):
        if os.environ.get("SAML_IDP_QUIET") != "1":
            sys.stderr.write("%s - %s\n" % (self.address_string(), fmt % args))

    def _send(self, status, ctype, body):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def _run(self, fn, *a):
        try:
            self._send(*fn(*a))
        except Exception as exc:  # show SAML errors to the test client
            self._send(400, "text/plain; charset=utf-8", f"error: {type(exc).__name__}: {exc}\n".encode())

    def do_GET(self):
        u = urllib.parse.urlsplit(self.path)
        q = dict(urllib.parse.parse_qsl(u.query))
        if u.path == "/idp/metadata":
            return self._run(_metadata_bytes)
        if u.path == "/idp/unsolicited":
            return self._run(handle_unsolicited, q)
        if u.path == "/healthz":
            return self._send(200, "text/plain", b"ok\n")
        if u.path == "/idp/sso/redirect" and "SAMLRequest" in q:
            return self._run(handle_authn_request, q["SAMLRequest"], BINDING_HTTP_REDIRECT, q.get("RelayState", ""),
                             q.get("SigAlg"), q.get("Signature"))
        self._send(404, "text/plain", b"not found\n")

    def do_POST(self):
        u = urllib.parse.urlsplit(self.path)
        n = int(self.headers.get("Content-Length") or 0)
        form = dict(urllib.parse.parse_qsl(self.rfile.read(min(n, 1 << 20)).decode()))
        if u.path == "/idp/sso/post" and "SAMLRequest" in form:
            return self._run(handle_authn_request, form["SAMLRequest"], BINDING_HTTP_POST, form.get("RelayState", ""))
        if u.path == "/idp/login":
            return self._run(handle_login, form)
        self._send(404, "text/plain", b"not found\n")


if __name__ == "__main__":
    ThreadingHTTPServer.request_queue_size = 128  # default backlog 5 stalls concurrent clients by 1 s (SYN retry)
    ThreadingHTTPServer.daemon_threads = True
    httpd = ThreadingHTTPServer((HOST, PORT), Handler)
    print(f"pysaml2 IdP {BASE}/idp/metadata listening on {HOST}:{PORT} (pid {os.getpid()}); "
          f"trusted SP metadata files: {SP_FILES or 'none yet'} (dir {SPDIR})", flush=True)
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass
