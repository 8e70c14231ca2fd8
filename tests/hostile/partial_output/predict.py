"""Predicts only the first half of the studies."""

import sys
from pathlib import Path

images = [line.strip() for line in Path(sys.argv[1]).read_text().splitlines() if line.strip()]
studies = list(dict.fromkeys(image.rpartition("/")[0] + "/" for image in images))
with open(sys.argv[2], "w") as out:
    out.writelines(f"{study},1\n" for study in studies[: len(studies) // 2])
