"""Dependency-free helpers shared by the workers (they run inside the peers' venvs).

``parse_integer`` mirrors funcgrad.tasks.parsing.parse_integer (funcgrad is not
installed in the peer venvs); the drivers re-score every raw output with funcgrad's
own ``integer_loss`` and report any disagreement, so the metric is the same by check,
not by trust.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time

NUMBER_WORDS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13,
    "fourteen": 14, "fifteen": 15, "sixteen": 16, "seventeen": 17, "eighteen": 18,
    "nineteen": 19, "twenty": 20,
}
_INT = r"-?\d{1,3}(?:,\d{3})+(?!\d)|-?\d+"
_MARKED = re.compile(
    r"(?:answer|result|total)\s*(?:is|=|:)?\s*[:=]?\s*\**\s*\$?\s*(" + _INT + r")(?![\d.]*\d)", re.IGNORECASE
)
_TAGGED = re.compile(r"<answer>\s*\$?\s*(" + _INT + r")\s*</answer>", re.IGNORECASE)
_ANY_INT = re.compile(r"(?<![\w.])(" + _INT + r")(?:\.0+)?(?![\w]|\.\d)")
_WORD = re.compile(r"(?<![-\w])(" + "|".join(NUMBER_WORDS) + r")(?![-\w])", re.IGNORECASE)


def parse_integer(text):
    """The final integer answer in ``text`` (same rules as funcgrad's), or None."""
    if not isinstance(text, str):
        text = "" if text is None else str(text)
    for pattern in (_TAGGED, _MARKED, _ANY_INT):
        found = pattern.findall(text)
        if found:
            return int(found[-1].replace(",", ""))
    words = _WORD.findall(text)
    if words:
        return NUMBER_WORDS[words[-1].lower()]
    return None


def correct(text, target) -> bool:
    return parse_integer(text) == target


def overhead_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--data", required=True, help="JSON written by overhead.py")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--max-tokens", type=int, default=200)
    return parser.parse_args()


def load(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


class Clock:
    """Wall and process CPU time (all threads of this process) of one measured block."""

    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu


def emit(result: dict) -> None:
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()


IMPORT_STARTED = time.perf_counter()
