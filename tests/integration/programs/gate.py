"""The start gate the test gives to programs it starts together.

The test (programs_test.cc) starts every process of a race first and only then
closes the write end of one pipe; each process holds the read end as a file
descriptor (--gate-fd) and blocks in read() until that EOF, so the slow part of
starting (the interpreter, `import torch`) is not part of the race and all of
them begin at the same moment.
"""
import os


def wait_gate(fd):
    """Blocks until the test opens the gate; no-op when fd is None."""
    if fd is None:
        return
    while os.read(fd, 1):
        pass
    os.close(fd)
