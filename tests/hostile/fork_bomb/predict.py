"""Forks without end; every child forks too. It first puts the token of token.txt (written by
the test) on its command line, which every fork inherits, so the test can look for survivors."""

import os
import sys
import time
from pathlib import Path

if len(sys.argv) == 3:
    token = Path("token.txt").read_text().strip()
    os.execv(sys.executable, [sys.executable, "predict.py", *sys.argv[1:], token])
print("forking", flush=True)
while True:
    try:
        os.fork()
    except OSError:
        time.sleep(0.01)
