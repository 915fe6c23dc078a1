"""Files `bot ingest` must refuse or repair: random bytes named .txt, a PDF cut short, a PDF whose
`startxref` pointer is off by 7 bytes (all made from the shipped corpus PDF)."""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import NamedTuple

from tests.conftest import CORPUS


class Unusable(NamedTuple):
    noise: Path  # 30 KiB of random bytes: a failure ("not a text file")
    cut: Path  # the first two thirds of a PDF: a failure ("EOF marker not found")
    skewed: Path  # a PDF with a wrong startxref: read, with warnings


def write_unusable(folder: Path) -> Unusable:
    """Writes the three files into `folder` and returns their paths."""
    noise = folder / "noise.txt"
    noise.write_bytes(random.Random(3).randbytes(30 * 1024))
    pdf = (CORPUS / "python-try-and-with-statements.pdf").read_bytes()
    cut = folder / "cut.pdf"
    cut.write_bytes(pdf[:len(pdf) * 2 // 3])
    skewed = folder / "skewed.pdf"
    pointer = re.search(rb"startxref\s+(\d+)\s+%%EOF\s*$", pdf)
    assert pointer
    skewed.write_bytes(pdf[:pointer.start(1)] + str(int(pointer.group(1)) + 7).encode()
                       + pdf[pointer.end(1):])
    return Unusable(noise, cut, skewed)
