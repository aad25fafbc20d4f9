"""The Hugging Face datasets builder's way of publishing a prepared dataset
(builder.py: download_and_prepare and incomplete_dir): under
FileLock(<cache>/<name>_builder.lock) build every file into
<output_dir>.incomplete/, then, if <output_dir> exists (a forced rebuild),
remove it, and rename the finished, non-empty directory into place with one
os.rename, so that a reader sees either no dataset or all of it.

The files: dataset_info.json, state.json and two arrow-like binary splits
(train: a few MB, written in record-batch-sized pieces as ArrowWriter does;
test: smaller). The same bytes are written to --expect-dir on local disk, for
the reader on the other node to compare with.
"""
import argparse
import json
import os
import random
import shutil
import sys

import filelock

BATCH = 64 * 1024


def arrow_like(seed, size):
    """`size` bytes: the Arrow file magic, pseudo-random "record batches", the magic."""
    magic = b"ARROW1\0\0"
    return magic + random.Random(seed).randbytes(size - 2 * len(magic)) + magic


def write_in_batches(path, data):
    with open(path, "wb") as f:
        for off in range(0, len(data), BATCH):
            f.write(data[off:off + BATCH])


def files_of(name, seed):
    train = arrow_like(seed, 5 * 1024 * 1024 + 4321)
    test = arrow_like(seed + 1, 700 * 1024 + 17)
    info = {
        "builder_name": name,
        "splits": {"train": {"num_bytes": len(train)}, "test": {"num_bytes": len(test)}},
        "seed": seed,
    }
    return {
        f"{name}-train.arrow": train,
        f"{name}-test.arrow": test,
        "dataset_info.json": json.dumps(info, indent=2).encode(),
        "state.json": json.dumps({"_fingerprint": f"{seed:016x}"}).encode(),
    }


def incomplete_dir_build(output_dir, files):
    tmp_dir = output_dir + ".incomplete"
    os.makedirs(tmp_dir, exist_ok=True)
    try:
        for fname, data in files.items():
            write_in_batches(os.path.join(tmp_dir, fname), data)
        if os.path.isdir(output_dir):
            shutil.rmtree(output_dir)
        os.rename(tmp_dir, output_dir)
    finally:
        if os.path.exists(tmp_dir):
            shutil.rmtree(tmp_dir)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--cache-dir", required=True)
    parser.add_argument("--name", default="squadish")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--expect-dir", required=True)
    args = parser.parse_args()

    base = os.path.join(args.name, "default", "0.0.0", "0123456789abcdef")
    output_dir = os.path.join(args.cache_dir, base)
    os.makedirs(os.path.dirname(output_dir), exist_ok=True)
    lock_path = os.path.join(args.cache_dir, base.replace(os.sep, "_") + "_builder.lock")
    files = files_of(args.name, args.seed)
    with filelock.FileLock(lock_path):
        incomplete_dir_build(output_dir, files)
    os.makedirs(args.expect_dir, exist_ok=True)
    for fname, data in files.items():
        with open(os.path.join(args.expect_dir, fname), "wb") as f:
            f.write(data)
    print(output_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
