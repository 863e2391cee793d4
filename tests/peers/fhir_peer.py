#!/usr/bin/env python3
"""An independent FHIR client for medbus's gateway tests (fhirpy, requests, PyJWT).

Subcommands (each prints one JSON document on stdout):
  read BASE TYPE ID [TOKEN]            fhirpy: fetch one resource -> the resource
  search BASE TYPE TOKEN K=V...        fhirpy: fetch_all (follows `next` links) -> list
  request METHOD URL TOKEN [BODYFILE]  requests: -> {"status", "headers", "body"}
  keys DIR                             make an RSA and an EC key pair, write DIR/jwks.json
  mint DIR ALG CLAIMS_JSON             -> {"token"}; ALG RS256 or ES256, "exp"/"nbf" relative seconds
  hook PORT LOGFILE [STATUS]           a rest-hook endpoint: appends each POST body as a JSON line
  ws URL FRAME...                      websocket-client: send each FRAME (text; "BINARY:x" sends binary x),
                                       then print every message received as a JSON line
                                       ({"text"} or {"closed", "reason"}); also reads FRAMEs from stdin lines
TOKEN "-" means none.
"""
import json
import sys
import time


def token_arg(t):
    return None if t == "-" else t


def cmd_read(base, rtype, rid, token="-"):
    from fhirpy import SyncFHIRClient
    c = SyncFHIRClient(base, authorization=f"Bearer {token}" if token_arg(token) else None)
    r = c.reference(rtype, rid).to_resource()
    print(json.dumps(r.serialize()))


def cmd_search(base, rtype, token, *params):
    from fhirpy import SyncFHIRClient
    c = SyncFHIRClient(base, authorization=f"Bearer {token}" if token_arg(token) else None)
    kw = {}
    for p in params:
        k, v = p.split("=", 1)
        kw[k] = v
    count = kw.pop("_count", None)
    s = c.resources(rtype).search(**kw)
    if count:
        s = s.limit(int(count))
    print(json.dumps([r.serialize() for r in s.fetch_all()]))


def cmd_request(method, url, token, body=None):
    import requests
    headers = {"Accept": "application/fhir+json"}
    if token_arg(token):
        headers["Authorization"] = f"Bearer {token}"
    data = None
    if body:
        data = open(body, "rb").read()
        headers["Content-Type"] = "application/fhir+json"
    r = requests.request(method, url, headers=headers, data=data, timeout=30)
    try:
        b = r.json()
    except ValueError:
        b = r.text
    print(json.dumps({"status": r.status_code, "headers": {k.lower(): v for k, v in r.headers.items()}, "body": b}))


def cmd_keys(d):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from jwt.algorithms import ECAlgorithm, RSAAlgorithm
    rk = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ek = ec.generate_private_key(ec.SECP256R1())
    pem = lambda k: k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    open(f"{d}/rsa.pem", "wb").write(pem(rk))
    open(f"{d}/ec.pem", "wb").write(pem(ek))
    rj = json.loads(RSAAlgorithm.to_jwk(rk.public_key()))
    rj.update({"kid": "rsa1", "use": "sig", "alg": "RS256"})
    ej = json.loads(ECAlgorithm.to_jwk(ek.public_key()))
    ej.update({"kid": "ec1", "use": "sig", "alg": "ES256"})
    json.dump({"keys": [rj, ej]}, open(f"{d}/jwks.json", "w"))
    print(json.dumps({"jwks": f"{d}/jwks.json"}))


def cmd_mint(d, alg, claims):
    import jwt
    c = json.loads(claims)
    now = int(time.time())
    for k in ("exp", "nbf", "iat"):
        if k in c:
            c[k] = now + int(c[k])
    key = open(f"{d}/{'rsa' if alg == 'RS256' else 'ec'}.pem", "rb").read()
    kid = "rsa1" if alg == "RS256" else "ec1"
    print(json.dumps({"token": jwt.encode(c, key, algorithm=alg, headers={"kid": kid})}))


def cmd_hook(port, logfile, status="200"):
    import http.server

    class H(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            n = int(self.headers.get("content-length", 0))
            body = self.rfile.read(n)
            with open(logfile, "a") as f:
                f.write(json.dumps({"path": self.path, "token": self.headers.get("X-Token"),
                                    "content_type": self.headers.get("Content-Type"),
                                    "body": json.loads(body or b"null")}) + "\n")
            self.send_response(int(status))
            self.end_headers()

        def log_message(self, *a):
            pass

    srv = http.server.HTTPServer(("127.0.0.1", int(port)), H)
    print(json.dumps({"listening": srv.server_address[1]}), flush=True)
    srv.serve_forever()


def cmd_ws(url, *frames):
    import threading
    import websocket
    ws = websocket.create_connection(url, timeout=60)

    def send(f):
        if f.startswith("BINARY:"):
            ws.send_binary(f[len("BINARY:"):].encode())
        else:
            ws.send(f)

    for f in frames:
        send(f)

    def more():
        for line in sys.stdin:
            line = line.rstrip("\n")
            if line:
                send(line)

    threading.Thread(target=more, daemon=True).start()
    while True:
        try:
            op, data = ws.recv_data()
        except websocket.WebSocketConnectionClosedException:
            print(json.dumps({"closed": None, "reason": ""}), flush=True)
            return
        if op == websocket.ABNF.OPCODE_CLOSE:
            code = int.from_bytes(data[:2], "big") if len(data) >= 2 else None
            print(json.dumps({"closed": code, "reason": data[2:].decode("utf-8", "replace")}), flush=True)
            return
        print(json.dumps({"text": data.decode("utf-8")}), flush=True)


if __name__ == "__main__":
    globals()["cmd_" + sys.argv[1]](*sys.argv[2:])
