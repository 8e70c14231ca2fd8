"""Writes to stdout without end."""

import sys

line = "flood " * 10_000 + "\n"
while True:
    sys.stdout.write(line)
