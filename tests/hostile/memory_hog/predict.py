"""Takes memory until something stops it (touching every page, so it is really used)."""

hog = []
while True:
    hog.append(bytearray(b"x" * (64 << 20)))
