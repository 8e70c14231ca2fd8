"""Tries to change the test data: overwrite an image and the input list, delete, add a file.
If any of it works it writes a valid answer, so a writable data mount would not fail."""

import os
import sys
from pathlib import Path

images = [line.strip() for line in Path(sys.argv[1]).read_text().splitlines() if line.strip()]
done = []
attempts = {
    "overwrite an image": lambda: Path(images[0]).write_bytes(b"gone"),
    "truncate the input list": lambda: Path(sys.argv[1]).write_text(""),
    "delete an image": lambda: os.remove(images[-1]),
    "add a file": lambda: Path(sys.argv[1]).with_name("planted.txt").write_text("x"),
    "chmod the data": lambda: os.chmod(os.path.dirname(sys.argv[1]), 0o777),
}
for what, attempt in attempts.items():
    try:
        attempt()
        done.append(what)
    except OSError as exc:
        print(f"{what}: {exc}", flush=True)
if not done:
    print("the data folder is read-only: nothing could be changed", flush=True)  # after the lines above
    sys.exit(1)
studies = dict.fromkeys(image.rpartition("/")[0] + "/" for image in images)
with open(sys.argv[2], "w") as out:
    out.writelines(f"{study},1\n" for study in studies)
print("changed:", done)
