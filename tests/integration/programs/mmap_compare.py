"""Reads a file the way pyarrow's memory_map and numpy's memmap do, through
mmap, and compares it with an expected copy on local disk:

  ACCESS_COPY  MAP_PRIVATE (copy-on-write): every byte equal; a write into the
               map changes the map only, never the file
  ACCESS_READ  MAP_SHARED read-only: every byte equal

Exit codes: 0 equal; 3 bytes differ (the first differing offset is printed);
4 a private write reached the file.
"""
import mmap
import os
import sys


def first_difference(a, b):
    n = min(len(a), len(b))
    for off in range(0, n, 4096):
        if a[off:off + 4096] != b[off:off + 4096]:
            for i in range(off, min(off + 4096, n)):
                if a[i] != b[i]:
                    return i
    return n if len(a) != len(b) else -1


def main():
    path, expected_path = sys.argv[1], sys.argv[2]
    with open(expected_path, "rb") as f:
        expected = f.read()
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size != len(expected):
            print(f"size {os.fstat(f.fileno()).st_size} != {len(expected)}", file=sys.stderr)
            return 3
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY) as m:
            seen = m[:]
            diff = first_difference(seen, expected)
            if diff >= 0:
                print(f"MAP_PRIVATE: first difference at {diff}", file=sys.stderr)
                return 3
            m[0:8] = b"XXXXXXXX"  # Copy-on-write: the file must not change.
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            diff = first_difference(m[:], expected)
            if diff >= 0:
                print(f"MAP_SHARED: first difference at {diff}", file=sys.stderr)
                return 3
    with open(path, "rb") as f:
        if f.read(8) != expected[:8]:
            print("a write into a MAP_PRIVATE map reached the file", file=sys.stderr)
            return 4
    print(f"{len(expected)} bytes equal")
    return 0


if __name__ == "__main__":
    sys.exit(main())
