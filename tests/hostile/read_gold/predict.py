"""Tries to read the gold labels: the organiser's paths (targets.txt, written by the test), then
every CSV file on the whole visible file system that names a real study (`MURA-v1.1/`, a
`_positive`/`_negative` folder): the gold file, the dataset's labels, the map back. With
anything found it writes an answer, so a leak would score instead of failing."""

import contextlib
import os
import sys
from pathlib import Path

found = []
targets = [line.strip() for line in Path("targets.txt").read_text().splitlines() if line.strip()]
for number, path in enumerate(targets, start=1):
    try:
        found.append((path, Path(path).read_text()))
    except OSError as exc:
        print(f"target {number}: {type(exc).__name__}", flush=True)
LABELS = ("MURA-v1.1/", "_positive", "_negative")
for root, dirs, files in os.walk("/"):
    dirs[:] = [d for d in dirs if os.path.join(root, d) not in ("/proc", "/sys", "/dev")]
    for name in files:
        path = Path(root, name)
        if name.endswith(".csv"):
            with contextlib.suppress(OSError, UnicodeDecodeError):
                if path.stat().st_size < 50 << 20 and any(key in path.read_text() for key in LABELS):
                    found.append((str(path), path.read_text()))
if not found:
    print("no labels anywhere: the gold file cannot be read", flush=True)  # on stdout, after the lines above
    sys.exit(1)
print("read:", [path for path, _ in found])
images = [line.strip() for line in Path(sys.argv[1]).read_text().splitlines() if line.strip()]
studies = dict.fromkeys(image.rpartition("/")[0] + "/" for image in images)
with open(sys.argv[2], "w") as out:
    out.writelines(f"{study},1\n" for study in studies)
