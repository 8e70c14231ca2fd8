"""Forks up to 400 children that wait, to count the forks the sandbox allows before it refuses
one; exits 1 either way (it never answers). It first puts the token of token.txt (written by the
test) on its command line, which every child inherits, so the test can look for survivors."""

import os
import sys
import time
from pathlib import Path

if len(sys.argv) == 3:
    token = Path("token.txt").read_text().strip()
    os.execv(sys.executable, [sys.executable, "predict.py", *sys.argv[1:], token])
children = 0
for _ in range(400):
    try:
        pid = os.fork()
    except OSError as exc:
        print(f"fork refused after {children} children ({exc.strerror})", flush=True)
        sys.exit(1)
    if pid == 0:
        time.sleep(5)
        os._exit(0)
    children += 1
print(f"fork never refused: {children} children", flush=True)
sys.exit(1)
