"""torch.save of a checkpoint on one node, torch.load on the other.

The checkpoint: the state_dict of a small nn.Sequential, an optimizer state,
a 4 MB tensor and a few plain values, all made from a fixed seed, so that
`load` can rebuild what `save` wrote and compare every tensor with torch.equal.
`save` also writes the same checkpoint to --local (local disk); `load` loads
that too and compares the two loads.

Exit codes: 0 equal; 3 a tensor or value differs (its key is printed).
"""
import argparse
import sys

import torch
from torch import nn


def make_checkpoint():
    torch.manual_seed(1234)
    model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    loss = model(torch.randn(32, 64)).square().mean()
    loss.backward()
    opt.step()
    return {
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "embedding": torch.randn(1024 * 1024),  # 4 MB of float32
        "step": 7,
        "name": "programs-test",
    }


def compare(a, b, path="ckpt"):
    """The first path where `a` and `b` differ, or None."""
    if isinstance(a, torch.Tensor):
        if not isinstance(b, torch.Tensor) or a.dtype != b.dtype or not torch.equal(a, b):
            return path
        return None
    if isinstance(a, dict):
        if not isinstance(b, dict) or set(a) != set(b):
            return path
        for k in a:
            d = compare(a[k], b[k], f"{path}.{k}")
            if d:
                return d
        return None
    if isinstance(a, (list, tuple)):
        if len(a) != len(b):
            return path
        for i, (x, y) in enumerate(zip(a, b)):
            d = compare(x, y, f"{path}[{i}]")
            if d:
                return d
        return None
    return None if a == b else path


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["save", "load"])
    parser.add_argument("path")
    parser.add_argument("--local", required=True)
    args = parser.parse_args()
    if args.mode == "save":
        ckpt = make_checkpoint()
        torch.save(ckpt, args.path)
        torch.save(ckpt, args.local)
        return 0
    expected = make_checkpoint()
    loaded = torch.load(args.path, map_location="cpu")
    local = torch.load(args.local, map_location="cpu")
    for name, got in (("mount", loaded), ("local", local)):
        d = compare(expected, got)
        if d:
            print(f"{name} checkpoint differs at {d}", file=sys.stderr)
            return 3
    nbytes = expected["embedding"].numel() * expected["embedding"].element_size()
    print(f"checkpoint equal ({nbytes} bytes of embedding)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
