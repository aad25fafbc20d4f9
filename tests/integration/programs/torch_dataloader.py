"""A torch DataLoader with worker processes reading a dataset of many small
files from the mount, the way an image/text dataset is read in training.

`write` makes --files files (sample_NNNN.bin, 1 to 64 KB each, bytes derived
from the index) under the dataset folder. `read` lists the folder, builds a
map-style Dataset over the files and iterates a DataLoader with
--workers processes (shuffled, batches of 8); each worker reads whole files
and returns (name, bytes). The main process checks that every file was seen
exactly once and that its bytes are right.

Exit codes: 0 right; 3 a file missing, seen twice, or with wrong bytes.
"""
import argparse
import hashlib
import os
import sys


def sample_bytes(index):
    seed = hashlib.sha256(f"sample-{index}".encode()).digest()
    size = 1024 + int.from_bytes(seed[:4], "little") % (63 * 1024)
    out = bytearray()
    block = seed
    while len(out) < size:
        block = hashlib.sha256(block).digest()
        out += block
    return bytes(out[:size])


def name_of(index):
    return f"sample_{index:04d}.bin"


def write(folder, files):
    os.makedirs(folder, exist_ok=True)
    for i in range(files):
        with open(os.path.join(folder, name_of(i)), "wb") as f:
            f.write(sample_bytes(i))
    return 0


def read(folder, files, workers):
    import torch
    from torch.utils.data import DataLoader, Dataset

    class FileDataset(Dataset):
        def __init__(self, paths):
            self.paths = paths

        def __len__(self):
            return len(self.paths)

        def __getitem__(self, i):
            with open(self.paths[i], "rb") as f:
                return os.path.basename(self.paths[i]), f.read()

    names = sorted(os.listdir(folder))
    paths = [os.path.join(folder, n) for n in names]
    loader = DataLoader(FileDataset(paths), batch_size=8, shuffle=True, num_workers=workers,
                        collate_fn=lambda batch: batch,
                        generator=torch.Generator().manual_seed(0))
    seen = {}
    for batch in loader:
        for name, data in batch:
            seen[name] = seen.get(name, 0) + 1
            index = int(name[len("sample_"):-len(".bin")])
            if data != sample_bytes(index):
                print(f"{name}: wrong bytes ({len(data)} read)", file=sys.stderr)
                return 3
    expected = {name_of(i) for i in range(files)}
    if set(seen) != expected:
        print(f"missing {sorted(expected - set(seen))[:5]}, extra {sorted(set(seen) - expected)[:5]}",
              file=sys.stderr)
        return 3
    twice = [n for n, c in seen.items() if c != 1]
    if twice:
        print(f"seen more than once: {twice[:5]}", file=sys.stderr)
        return 3
    print(f"{len(seen)} files, each once, bytes right, {workers} workers")
    return 0


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["write", "read"])
    parser.add_argument("folder")
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args()
    if args.mode == "write":
        return write(args.folder, args.files)
    return read(args.folder, args.files, args.workers)


if __name__ == "__main__":
    sys.exit(main())
