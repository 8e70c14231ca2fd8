"""Writes a valid answer: every study of the input once, abnormal when its case number is odd."""

import sys
from pathlib import Path

images = [line.strip() for line in Path(sys.argv[1]).read_text().splitlines() if line.strip()]
studies = dict.fromkeys(image.rpartition("/")[0] + "/" for image in images)
with open(sys.argv[2], "w") as out:
    for study in studies:
        out.write(f"{study},{int(study.rstrip('/')[-1]) % 2}\n")
print(f"wrote {len(studies)} studies")
