"""huggingface_hub's hf_hub_download cache protocol (file_download.py), step
for step, with a local folder standing in for the Hub so that no network is
needed. Every file of the "remote" folder is downloaded into
<hf-home>/hub/models--<org>--<name>/ the way the library does it:

  refs/<revision>                 the commit hash, written through a temp file
                                  and os.replace
  blobs/<etag>                    the bytes, downloaded under
                                  .locks/models--<org>--<name>/<etag>.lock into
                                  blobs/<etag>.<uuid>.incomplete, chmod-ed like
                                  a fresh file of the cache, then os.replace-d
  snapshots/<commit>/<path>       a relative symlink to ../../blobs/<etag>
                                  (one more ../ per directory of <path>)

Several of these processes run at once on two nodes against one HF_HOME: the
file lock keeps two processes of one node from downloading one blob twice;
across nodes the per-process .incomplete name and the atomic os.replace keep
the blob whole even where two processes download it at the same time.

The etag is the SHA-256 of the bytes (what the Hub uses for LFS files).
Exit code 0 when every file is in place; the files are checked by the test.
"""
import argparse
import hashlib
import os
import random
import stat
import sys
import tempfile
import uuid
from pathlib import Path

import filelock

from gate import wait_gate

CHUNK = 10 * 1024 * 1024  # huggingface_hub's DOWNLOAD_CHUNK_SIZE


def repo_folder_name(repo_id, repo_type="model"):
    return "--".join([f"{repo_type}s", *repo_id.split("/")])


def symlinks_supported(cache_dir):
    """_are_symlinks_supported_in_dir: a relative symlink in a temp dir of the cache."""
    with tempfile.TemporaryDirectory(dir=cache_dir) as tmpdir:
        src = Path(tmpdir) / "dummy_file_src"
        src.touch()
        dst = Path(tmpdir) / "dummy_file_dst"
        relative_src = os.path.relpath(src, start=os.path.dirname(dst))
        try:
            os.symlink(relative_src, dst)
        except OSError:
            return False
    return True


def create_symlink(src, dst):
    """_create_symlink: a relative link; a concurrent creator of the same link is fine."""
    abs_src = os.path.abspath(os.path.expanduser(src))
    abs_dst = os.path.abspath(os.path.expanduser(dst))
    relative_src = os.path.relpath(abs_src, os.path.dirname(abs_dst))
    try:
        os.remove(abs_dst)
    except OSError:
        pass
    try:
        os.symlink(relative_src, abs_dst)
    except FileExistsError:
        if os.path.islink(abs_dst) and os.path.realpath(abs_dst) == os.path.realpath(abs_src):
            return  # Cached twice concurrently, between our remove and symlink.
        raise


def chmod_and_replace(src, dst):
    """_chmod_and_replace: the blob gets the mode a new file of the cache gets."""
    tmp_file = Path(dst).parent.parent / f"tmp_{uuid.uuid4()}"
    try:
        tmp_file.touch()
        cache_dir_mode = Path(tmp_file).stat().st_mode
        os.chmod(src, stat.S_IMODE(cache_dir_mode))
    finally:
        tmp_file.unlink()
    os.replace(src, dst)


def write_ref(storage_folder, revision, commit_hash):
    """_cache_commit_hash_for_specific_revision, with the write made atomic."""
    if revision == commit_hash:
        return
    ref_path = Path(storage_folder) / "refs" / revision
    ref_path.parent.mkdir(parents=True, exist_ok=True)
    if not ref_path.exists() or ref_path.read_text() != commit_hash:
        tmp = ref_path.parent / f".{revision}.{uuid.uuid4().hex}.tmp"
        tmp.write_text(commit_hash)
        os.replace(tmp, ref_path)


def http_get(remote_path, temp_file):
    """The download itself: the remote bytes in DOWNLOAD_CHUNK_SIZE pieces."""
    with open(remote_path, "rb") as r:
        while True:
            chunk = r.read(CHUNK)
            if not chunk:
                break
            temp_file.write(chunk)


def hf_hub_download(cache_dir, repo_id, filename, revision, commit_hash, remote_dir, stats):
    storage_folder = os.path.join(cache_dir, repo_folder_name(repo_id))
    os.makedirs(storage_folder, exist_ok=True)
    remote_path = os.path.join(remote_dir, filename)
    # The "HEAD request": the etag of the file at this revision.
    with open(remote_path, "rb") as r:
        etag = hashlib.sha256(r.read()).hexdigest()
    write_ref(storage_folder, revision, commit_hash)

    blob_path = os.path.join(storage_folder, "blobs", etag)
    pointer_path = os.path.join(storage_folder, "snapshots", commit_hash, filename)
    os.makedirs(os.path.dirname(blob_path), exist_ok=True)
    os.makedirs(os.path.dirname(pointer_path), exist_ok=True)

    if os.path.exists(pointer_path):
        stats["cached"] += 1
        return pointer_path
    if os.path.exists(blob_path):
        create_symlink(blob_path, pointer_path)
        stats["linked"] += 1
        return pointer_path

    lock_path = os.path.join(cache_dir, ".locks", repo_folder_name(repo_id), f"{etag}.lock")
    Path(lock_path).parent.mkdir(parents=True, exist_ok=True)
    with filelock.FileLock(lock_path):
        # Someone may have downloaded it while we waited for the lock.
        if os.path.exists(pointer_path):
            stats["cached"] += 1
            return pointer_path
        if os.path.exists(blob_path):
            create_symlink(blob_path, pointer_path)
            stats["linked"] += 1
            return pointer_path
        incomplete_path = f"{blob_path}.{uuid.uuid4().hex}.incomplete"
        # NamedTemporaryFile's way: O_EXCL, mode 0600 (fixed by chmod_and_replace).
        fd = os.open(incomplete_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as temp_file:
            http_get(remote_path, temp_file)
        chmod_and_replace(incomplete_path, blob_path)
        create_symlink(blob_path, pointer_path)
        stats["downloaded"] += 1
    return pointer_path


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--hf-home", required=True)
    parser.add_argument("--repo", required=True)
    parser.add_argument("--remote", required=True, help="folder standing in for the repo on the Hub")
    parser.add_argument("--revision", default="main")
    parser.add_argument("--commit", required=True)
    parser.add_argument("--seed", type=int, default=0, help="order in which files are fetched")
    parser.add_argument("--gate-fd", type=int)
    args = parser.parse_args()

    cache_dir = os.path.join(args.hf_home, "hub")
    os.makedirs(cache_dir, exist_ok=True)
    files = sorted(
        os.path.relpath(os.path.join(root, name), args.remote)
        for root, _, names in os.walk(args.remote)
        for name in names
    )
    random.Random(args.seed).shuffle(files)
    wait_gate(args.gate_fd)
    if not symlinks_supported(cache_dir):
        print("symlinks are not supported in the cache dir", file=sys.stderr)
        return 2
    stats = {"downloaded": 0, "linked": 0, "cached": 0}
    for name in files:
        hf_hub_download(cache_dir, args.repo, name, args.revision, args.commit, args.remote, stats)
    print(" ".join(f"{k}={v}" for k, v in sorted(stats.items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
