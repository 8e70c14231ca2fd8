"""Writes probabilities where the contract wants 0 or 1."""

import sys
from pathlib import Path

images = [line.strip() for line in Path(sys.argv[1]).read_text().splitlines() if line.strip()]
studies = dict.fromkeys(image.rpartition("/")[0] + "/" for image in images)
with open(sys.argv[2], "w") as out:
    out.writelines(f"{study},0.73\n" for study in studies)
