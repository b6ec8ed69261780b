#!/usr/bin/env python3
"""The clients of scripts/soak.sh (not a test): drives every channel of one agent over
loopback for a bounded time and prints one JSON line of counts.

Threads, each a bounded loop with a short pause between iterations:
  imds        PUT a token (re-used for 60 s), GET the role listing and the document
  container   GET /v1/credentials/ROLE with the token read from the token file each time
  process     `spiffe-aws-agent credential-process --agent SOCKET --role ROLE`
  file        read the credentials file and check the profile's three keys
  flood       from FLOOD_START to FLOOD_END seconds: hold FLOOD_CONNECTIONS idle TCP
              connections to the IMDS and container endpoints, reconnecting when the agent
              closes one (it sheds idle connections under pressure)

A request is an error when it fails or lacks credentials; the flood's connections are not
clients and are only counted. Everything targets 127.0.0.1; every loop ends by DURATION.
"""

import configparser
import http.client
import json
import os
import selectors
import socket
import subprocess
import sys
import threading
import time

args = json.loads(sys.argv[1])
DEADLINE = time.monotonic() + args["duration"]
START = time.monotonic()
PAUSE = args.get("pause", 0.002)
counts = {}
errors_seen = {}
lock = threading.Lock()


def count(channel, ok, detail=""):
    with lock:
        c = counts.setdefault(channel, {"requests": 0, "errors": 0})
        c["requests"] += 1
        if not ok:
            c["errors"] += 1
            if len(errors_seen.setdefault(channel, [])) < 5:
                errors_seen[channel].append(detail[:200])


def running():
    return time.monotonic() < DEADLINE


def imds():
    host, port = "127.0.0.1", args["imds_port"]
    conn = http.client.HTTPConnection(host, port, timeout=5)
    token, token_at = None, 0.0
    role = args["role"]
    while running():
        try:
            if token is None or time.monotonic() - token_at > 60:
                conn.request("PUT", "/latest/api/token",
                             headers={"X-aws-ec2-metadata-token-ttl-seconds": "21600"})
                r = conn.getresponse()
                body = r.read()
                ok = r.status == 200
                count("imds", ok, f"token {r.status} {body[:100]!r}")
                if ok:
                    token, token_at = body.decode(), time.monotonic()
                    continue
            h = {"X-aws-ec2-metadata-token": token}
            conn.request("GET", "/latest/meta-data/iam/security-credentials/", headers=h)
            r = conn.getresponse()
            body = r.read()
            count("imds", r.status == 200 and body.decode() == role, f"list {r.status} {body[:100]!r}")
            conn.request("GET", f"/latest/meta-data/iam/security-credentials/{role}", headers=h)
            r = conn.getresponse()
            body = r.read()
            ok = r.status == 200 and json.loads(body).get("Code") == "Success"
            count("imds", ok, f"document {r.status} {body[:100]!r}")
        except Exception as e:  # a failed request is an error, then reconnect
            count("imds", False, repr(e))
            conn.close()
            conn = http.client.HTTPConnection(host, port, timeout=5)
        time.sleep(PAUSE)


def container():
    conn = http.client.HTTPConnection("127.0.0.1", args["container_port"], timeout=5)
    path = f"/v1/credentials/{args['role']}"
    while running():
        try:
            with open(args["token_file"]) as f:
                token = f.read().strip()
            conn.request("GET", path, headers={"Authorization": token})
            r = conn.getresponse()
            body = r.read()
            ok = r.status == 200 and bool(json.loads(body).get("AccessKeyId"))
            count("container", ok, f"{r.status} {body[:100]!r}")
        except Exception as e:
            count("container", False, repr(e))
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", args["container_port"], timeout=5)
        time.sleep(PAUSE)


def process():
    cmd = [args["bin"], "credential-process", "--agent", args["agent_socket"], "--role", args["role"]]
    while running():
        try:
            p = subprocess.run(cmd, capture_output=True, timeout=10)
            ok = p.returncode == 0 and json.loads(p.stdout).get("Version") == 1
            count("process", ok, f"exit {p.returncode} {p.stderr[:150]!r}")
        except Exception as e:
            count("process", False, repr(e))
        time.sleep(PAUSE * 5)


def credentials_file():
    while running():
        try:
            cp = configparser.ConfigParser()
            with open(args["credentials_file"]) as f:
                cp.read_file(f)
            s = cp[args["profile"]]
            ok = all(s.get(k) for k in ("aws_access_key_id", "aws_secret_access_key", "aws_session_token"))
            count("file", ok, "missing keys")
        except Exception as e:
            count("file", False, repr(e))
        time.sleep(PAUSE * 5)


flood = {"opened": 0, "closed_by_agent": 0, "connect_errors": 0, "peak_open": 0}


def flood_loop():
    n = args["flood_connections"]
    start, end = START + args["flood_start"], START + args["flood_end"]
    while time.monotonic() < start and running():
        time.sleep(0.1)
    sel = selectors.DefaultSelector()
    ports = [args["imds_port"], args["container_port"]]
    open_socks = set()

    def connect(i):
        s = socket.socket()
        s.setblocking(False)
        try:
            s.connect_ex(("127.0.0.1", ports[i % len(ports)]))
            sel.register(s, selectors.EVENT_READ, i)
            open_socks.add(s)
            flood["opened"] += 1
        except OSError:
            flood["connect_errors"] += 1
            s.close()

    for i in range(n):
        connect(i)
    while time.monotonic() < min(end, DEADLINE):
        flood["peak_open"] = max(flood["peak_open"], len(open_socks))
        for key, _ in sel.select(timeout=0.2):
            s = key.fileobj
            try:
                data = s.recv(4096)
            except OSError:
                data = b""
            if not data:  # closed by the agent: reconnect to keep the pressure on
                sel.unregister(s)
                open_socks.discard(s)
                s.close()
                flood["closed_by_agent"] += 1
                if time.monotonic() < end:
                    connect(key.data)
    for s in list(open_socks):
        sel.unregister(s)
        s.close()


threads = [threading.Thread(target=f, daemon=True) for f in (imds, container, process, credentials_file)]
if args["flood_connections"] > 0:
    threads.append(threading.Thread(target=flood_loop, daemon=True))
for t in threads:
    t.start()
for t in threads:
    t.join(timeout=max(0.0, DEADLINE - time.monotonic()) + 15)
print(json.dumps({"channels": counts, "flood": flood, "error_samples": errors_seen}))
