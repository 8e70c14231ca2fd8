"""Never ends, and leaves a child in its own session behind, which must die with it too.
The child's command line carries the token of token.txt (written by the test), so the test
can look for it among the host's processes."""

import subprocess
import sys
from pathlib import Path

token = Path("token.txt").read_text().strip()
child = f"import time  # {token}\nwhile True: time.sleep(1)"
subprocess.Popen([sys.executable, "-c", child], start_new_session=True)
print("looping forever", flush=True)
while True:
    pass
