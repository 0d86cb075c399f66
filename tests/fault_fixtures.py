"""Tasks with a bug planted in the user's code, for the fault-injection tests (public API only).

Each is :func:`train_fixtures.tiny_task` with one thing broken, so a run must stop
with a failure that names it instead of scoring the examples 0.
"""

import errno
import os
from pathlib import Path

import attrs

import funcgrad as fg
from train_fixtures import ANSWER, parse, tiny_task


@fg.fn("parse")
def broken_parse(text):
    raise ValueError(f"cannot parse {text!r}")


WRONG_TEMPLATE = fg.LLM("answer", system=("instruction",), user="{question}", max_tokens=8)
WRONG_PARAM = fg.LLM("answer", system=("instructions",), user="{input}", max_tokens=8)


def _raising_loss(output, example):
    raise ZeroDivisionError("division by zero in the user's loss")


def buggy_task(bug: str, n: int = 12) -> fg.Task:
    """``tiny_task`` with ``bug``: fn (a node raises), template (missing key), param (unknown name), loss (raises)."""
    task = tiny_task(n)
    if bug == "fn":
        return attrs.evolve(task, pipeline=lambda p, x: broken_parse(ANSWER(p, input=x)))
    if bug == "template":
        return attrs.evolve(task, pipeline=lambda p, x: parse(WRONG_TEMPLATE(p, input=x)))
    if bug == "param":
        return attrs.evolve(task, pipeline=lambda p, x: parse(WRONG_PARAM(p, input=x)))
    if bug == "loss":
        return attrs.evolve(task, loss=_raising_loss)
    raise ValueError(f"unknown bug {bug!r}")


def surrogate_task(where: str = "input", n: int = 12) -> fg.Task:
    """``tiny_task`` whose data (``where="input"``) or prompt (``"prompt"``) holds a lone surrogate."""
    task = tiny_task(n)
    if where == "input":
        bad = fg.Example("e-bad", "q\udc80", "x")  # raises: a lone surrogate cannot reach a model or a trace
        return attrs.evolve(task, test=task.test + (bad,))
    return attrs.evolve(task, state=fg.PromptState.of(instruction=fg.Param("Answer the \udc80 question.")))


def no_val_task(n: int = 12) -> fg.Task:
    """``tiny_task`` with an empty validation split (what ``n_val = 0`` gives a built-in task)."""
    return attrs.evolve(tiny_task(n), val=())


def raising_factory(n: int = 12) -> fg.Task:
    """A task factory with a bug: it raises before building anything."""
    raise RuntimeError("the dataset file was not found")


class DiskFault:
    """Writes under ``root`` fail with ``OSError(errno)`` while ``on`` (and ``when()``) hold: a full disk
    (ENOSPC: every ``os.write``) or a read-only folder (EACCES: also every ``os.open`` that creates or writes).

    It patches ``os.write`` and ``os.open`` (through pytest's ``monkeypatch``), which every funcgrad
    write goes through (appends, atomic replacements, the lock, temp files); other paths are untouched.
    """

    def __init__(self, monkeypatch, root, error: int = errno.ENOSPC, when=lambda: True):
        self.root, self.error, self.when, self.on, self.hits = str(Path(root).resolve()), error, when, True, []
        real_write, real_open = os.write, os.open

        def active(path: str) -> bool:
            return self.on and (path == self.root or path.startswith(self.root + os.sep)) and self.when()

        def write(fd, data):
            path = os.readlink(f"/proc/self/fd/{fd}") if os.path.exists(f"/proc/self/fd/{fd}") else ""
            if active(path):
                self.hits.append(path)
                raise OSError(self.error, os.strerror(self.error))
            return real_write(fd, data)

        def open_(path, flags, mode=0o777, *, dir_fd=None):
            writes = flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)
            if self.error != errno.ENOSPC and writes and active(os.path.abspath(os.fspath(path))):
                self.hits.append(os.fspath(path))
                raise OSError(self.error, os.strerror(self.error), os.fspath(path))
            return real_open(path, flags, mode, dir_fd=dir_fd)

        monkeypatch.setattr(os, "write", write)
        monkeypatch.setattr(os, "open", open_)
