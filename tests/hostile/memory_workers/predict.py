"""Four worker processes that each take 96 MiB and then wait for work, as a pool does: under a
256 MiB limit for the whole run the OOM killer ends one of them, and the parent would wait for
it forever. Only a cap per process lets all four live (384 MiB together). The token of token.txt
(written by the test) is on every process's command line, so the test can look for survivors."""

import os
import sys
import time
from pathlib import Path

if len(sys.argv) == 3:
    token = Path("token.txt").read_text().strip()
    os.execv(sys.executable, [sys.executable, "predict.py", *sys.argv[1:], token])
for worker in range(4):
    if os.fork() == 0:
        memory = bytearray(96 << 20)
        for page in range(0, len(memory), 4096):  # touched, so it is really used
            memory[page] = 1
        print(f"worker {worker} holds 96 MiB", flush=True)
        while True:
            time.sleep(1)
for _ in range(4):
    os.wait()
