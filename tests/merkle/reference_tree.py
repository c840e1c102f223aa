"""The reference tree of transparency-dev/merkle (testonly/constants.go): its eight leaf
inputs. The shared inclusion vectors are built on it, test_merkle_tree.py checks every
subtree hash and root of it, and docs/merkle.md's example checkpoint is its root at 8.
"""

from __future__ import annotations

LEAF_INPUTS = [
    bytes.fromhex(h)
    for h in [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ]
]
