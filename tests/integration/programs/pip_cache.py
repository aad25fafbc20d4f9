"""pip's cache writes and its ownership check (pip/_internal/utils/filesystem.py,
network/cache.py), step for step:

  check_path_owner  as root, pip uses a cache folder only if it is owned by
                    uid 0, seen through os.open(O_RDONLY|O_NOFOLLOW[|O_DIRECTORY])
                    + os.fstat (get_path_uid); otherwise it disables the cache
  SafeFileCache.set each entry (http-v2 metadata and .body, wheels) written to an
                    adjacent NamedTemporaryFile (<name>XXXX.tmp), flushed,
                    os.fsync-ed, then os.replace-d over the entry

`write` mode writes this writer's entries plus one entry every writer writes;
`verify` mode reads the entries of the given writers and checks every byte (the
shared entry must be one writer's version, whole).

Exit codes: 0 fine; 2 pip would refuse the cache (owner check); 3 wrong bytes.
"""
import argparse
import hashlib
import os
import sys
from contextlib import contextmanager
from tempfile import NamedTemporaryFile

from gate import wait_gate


def get_path_uid(path):
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_DIRECTORY)
    try:
        return os.fstat(fd).st_uid
    finally:
        os.close(fd)


def check_path_owner(path):
    """True if pip (running as root) may use `path`; walks up to what exists."""
    assert os.path.isabs(path)
    previous = None
    while path != previous:
        if os.path.lexists(path):
            if os.geteuid() == 0:
                try:
                    return get_path_uid(path) == 0
                except OSError:
                    return False
            return os.access(path, os.W_OK)
        previous, path = path, os.path.dirname(path)
    return False


@contextmanager
def adjacent_tmp_file(path):
    with NamedTemporaryFile(delete=False, dir=os.path.dirname(path),
                            prefix=os.path.basename(path), suffix=".tmp") as f:
        try:
            yield f
        finally:
            f.flush()
            os.fsync(f.fileno())


def cache_path(cache_dir, key):
    """SafeFileCache._get_cache_path: five levels of the key's sha224."""
    hashed = hashlib.sha224(key.encode()).hexdigest()
    return os.path.join(cache_dir, "http-v2", *hashed[:5], hashed)


def safe_set(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with adjacent_tmp_file(path) as f:
        f.write(data)
    os.replace(f.name, path)


def content(writer, key, part):
    """Deterministic bytes of one entry: 1 KB to ~300 KB."""
    seed = hashlib.sha256(f"{writer}/{key}/{part}".encode()).digest()
    size = 1024 + int.from_bytes(seed[:4], "little") % (300 * 1024)
    out = bytearray()
    block = seed
    while len(out) < size:
        block = hashlib.sha256(block).digest()
        out += block
    return bytes(out[:size])


def entries(cache_dir, writer, keys):
    """(path, bytes) of each entry of `writer`: http metadata, body, a wheel."""
    for i in range(keys):
        key = f"https://pypi.example/simple/pkg-{writer}-{i}/"
        path = cache_path(cache_dir, key)
        yield path, content(writer, key, "meta")
        yield path + ".body", content(writer, key, "body")
    yield (os.path.join(cache_dir, "wheels", writer[:2], f"pkg_{writer}-1.0-py3-none-any.whl"),
           content(writer, "wheel", "whl"))


SHARED_KEY = "https://pypi.example/simple/numpy/"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["write", "verify"])
    parser.add_argument("--cache-dir", required=True)
    parser.add_argument("--writers", required=True, help="comma-separated; `write` uses the first")
    parser.add_argument("--keys", type=int, default=20)
    parser.add_argument("--gate-fd", type=int)
    args = parser.parse_args()
    writers = args.writers.split(",")

    if not check_path_owner(args.cache_dir):
        print(f"pip would disable the cache: {args.cache_dir} is not owned by root",
              file=sys.stderr)
        return 2
    wait_gate(args.gate_fd)
    shared = cache_path(args.cache_dir, SHARED_KEY)
    if args.mode == "write":
        writer = writers[0]
        for path, data in entries(args.cache_dir, writer, args.keys):
            safe_set(path, data)
        for _ in range(3):  # Every writer replaces the shared entry, more than once.
            safe_set(shared, content(writer, SHARED_KEY, "meta"))
        if not check_path_owner(args.cache_dir):
            print("the cache folder is no longer owned by root", file=sys.stderr)
            return 2
        return 0

    bad = 0
    checked = 0
    for writer in writers:
        for path, data in entries(args.cache_dir, writer, args.keys):
            with open(path, "rb") as f:
                seen = f.read()
            checked += 1
            if seen != data:
                print(f"{path}: {len(seen)} bytes, expected {len(data)}", file=sys.stderr)
                bad += 1
    with open(shared, "rb") as f:
        seen = f.read()
    if seen not in [content(w, SHARED_KEY, "meta") for w in writers]:
        print(f"{shared}: not any writer's version ({len(seen)} bytes)", file=sys.stderr)
        bad += 1
    print(f"checked {checked + 1} entries, {bad} wrong")
    return 3 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
