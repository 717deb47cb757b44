"""What a node prints for a person or a launcher: one line at a time, on standard output.

A node's reader can go away (its launcher killed, a closed pipe); the node must still finish what it
is doing, such as saving its checkpoints on the way out. So once standard output is broken, what
follows goes nowhere instead of raising.
"""

from __future__ import annotations

import os
import sys


def say(line: str) -> None:
    try:
        print(line, flush=True)
    except BrokenPipeError:
        # Point the descriptor at /dev/null, so later prints, and the flush at exit, succeed; the
        # same for standard error when it is the same broken pipe (a launcher reads both as one).
        out, err = sys.stdout.fileno(), sys.stderr.fileno()
        same = os.path.sameopenfile(out, err)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, out)
        if same:
            os.dup2(devnull, err)
        os.close(devnull)
