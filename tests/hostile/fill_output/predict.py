"""Writes a valid answer, then fills /output with 1 MiB files without end (a disk filler: every
file stays below the file-size limit)."""

import os
import sys
from pathlib import Path

images = [line.strip() for line in Path(sys.argv[1]).read_text().splitlines() if line.strip()]
studies = dict.fromkeys(image.rpartition("/")[0] + "/" for image in images)
with open(sys.argv[2], "w") as out:
    out.writelines(f"{study},0\n" for study in studies)
block = os.urandom(1 << 20)
for number in range(1_000_000):
    Path(f"/output/junk{number}.bin").write_bytes(block)
