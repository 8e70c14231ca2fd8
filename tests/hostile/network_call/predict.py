"""Tries to reach the network: a server on the host (targets.txt, written by the test), the
host's loopback, a DNS lookup. If anything answers it writes a valid answer, so a sandbox
that lets the call through would be scored instead of failing."""

import socket
import sys
from pathlib import Path

answered = []
targets = [tuple(line.split()) for line in Path("targets.txt").read_text().splitlines() if line.strip()]
for host, port in targets + [("127.0.0.1", "22"), ("pypi.org", "443")]:
    try:
        socket.create_connection((host, int(port)), timeout=3).close()
        answered.append(f"{host}:{port}")
    except OSError as exc:
        print(f"{host}:{port}: {exc}", flush=True)
if not answered:
    print("no network: every connection failed", flush=True)  # on stdout, after the lines above
    sys.exit(1)
images = [line.strip() for line in Path(sys.argv[1]).read_text().splitlines() if line.strip()]
studies = dict.fromkeys(image.rpartition("/")[0] + "/" for image in images)
with open(sys.argv[2], "w") as out:
    out.writelines(f"{study},1\n" for study in studies)
print("reached", answered)
