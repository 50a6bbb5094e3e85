"""Build the MNIST sample bundled in the package from the official files.

Keeps the first 1,500 train and 250 test images of each of the digits 7 and 9 (the study's
digits) and the first 200 train and 50 test images of every other digit (enough for a run on
all ten digits to work end to end), in the official order, and writes them as IDX files
(gzip -9, no timestamp) so that the package reads them with the same code as the full data
set. The 7s and 9s are those of the earlier two-digit sample, in the same order.

    python tools/make_mnist_sample.py ../shared/data/mnist src/patchvae/data/sample/mnist
"""

from __future__ import annotations

import gzip
import sys
from pathlib import Path

import numpy as np

from patchvae.data.idx import encode_idx
from patchvae.data.mnist import FILE_STEMS, load_mnist_split

DIGITS = (7, 9)
PER_DIGIT = {"train": 1500, "test": 250}
PER_OTHER_DIGIT = {"train": 200, "test": 50}


def main(source: str, target: str) -> None:
    out = Path(target)
    out.mkdir(parents=True, exist_ok=True)
    for split, per_digit in PER_DIGIT.items():
        data = load_mnist_split(source, split)
        keep = np.concatenate(
            [
                np.flatnonzero(data.labels == d)[
                    : per_digit if d in DIGITS else PER_OTHER_DIGIT[split]
                ]
                for d in range(10)
            ]
        )
        keep.sort()  # official order
        for kind, array in (("images", data.images[keep]), ("labels", data.labels[keep])):
            blob = encode_idx(array.astype(np.uint8))
            (out / f"{FILE_STEMS[(split, kind)]}.gz").write_bytes(
                gzip.compress(blob, compresslevel=9, mtime=0)
            )
        print(
            f"{split}: {len(keep)} images ({per_digit} per digit of {DIGITS}, "
            f"{PER_OTHER_DIGIT[split]} of each other)"
        )


if __name__ == "__main__":
    main(*sys.argv[1:3])
