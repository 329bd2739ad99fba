#!/usr/bin/env python3
"""A tiny demo app for the proxy examples: answers every request with the X-Auth-* headers it
got from the proxy, as JSON, so you can see what the sidecar told the proxy to pass on.

    python3 examples/proxies/upstream.py [PORT]        # default 3000, on 127.0.0.1

    $ curl -s -H "Authorization: Bearer $TOKEN" http://127.0.0.1:8000/account
    {"method": "GET", "path": "/account", "x-auth": {"x-auth-subject": "alice", ...},
     "session": {...}, "claims": {...}}

X-Auth-Claims and X-Auth-Session are base64url (no padding) JSON; they are decoded into
"claims" and "session" for reading. Standard library only.
"""

import base64
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def decode(value):
    """base64url without padding -> JSON, or None."""
    if value is None:
        return None
    try:
        return json.loads(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)))
    except ValueError:
        return "(not base64url JSON)"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        # Every X-Auth-* header, each value as received (a repeated header shows all values).
        x_auth = {}
        for name, value in self.headers.items():
            if name.lower().startswith("x-auth-"):
                x_auth.setdefault(name.lower(), []).append(value)
        body = json.dumps(
            {
                "method": self.command,
                "path": self.path,
                "x-auth": x_auth,
                "claims": decode(self.headers.get("X-Auth-Claims")),
                "session": decode(self.headers.get("X-Auth-Session")),
            },
            indent=2,
        ).encode() + b"\n"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = answer

    def log_message(self, format, *args):  # quiet: one line per request on stderr is noise
        pass


def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    print(f"demo upstream on http://127.0.0.1:{port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
