"""Writes a valid answer: every study of the input once, abnormal when its case number is odd.
It also says what it saw: a `saw CASE SHA256...` line per case, the hash of each of its images
in input order, so the test can tell from the bytes alone which real study each case is."""

import hashlib
import sys
from pathlib import Path

images = [line.strip() for line in Path(sys.argv[1]).read_text().splitlines() if line.strip()]
studies = dict.fromkeys(image.rpartition("/")[0] + "/" for image in images)
with open(sys.argv[2], "w") as out:
    for study in studies:
        out.write(f"{study},{int(study.rstrip('/')[-1]) % 2}\n")
for study in studies:
    views = [image for image in images if image.rpartition("/")[0] + "/" == study]
    print("saw", study, *(hashlib.sha256(Path(view).read_bytes()).hexdigest() for view in views))
print(f"wrote {len(studies)} studies")
