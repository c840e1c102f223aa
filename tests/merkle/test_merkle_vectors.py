"""The transparency-dev inclusion vectors in ../shared/vectors/merkle/inclusion.

Each file must be accepted exactly when its wantErr is false. The folder sits beside the
repository (in /work/shared when the repository is /work/main); a fresh clone has no
such folder, and then this module skips.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.merkle import rfc6962_slow as slow
from tests.support.encoding import unb64
from wire.merkle import ProofError, verify_inclusion

VECTORS = Path(__file__).resolve().parents[2].parent / "shared" / "vectors" / "merkle"
INCLUSION = VECTORS / "inclusion"

if not INCLUSION.is_dir():
    pytest.skip(f"no shared vectors at {INCLUSION}", allow_module_level=True)

FILES = sorted(INCLUSION.rglob("*.json"))


def _load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def test_vectors_are_there() -> None:
    assert len(FILES) >= 90
    assert sum(1 for f in FILES if not _load(f)["wantErr"]) >= 6


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(INCLUSION)))
def test_inclusion_vector(path: Path) -> None:
    vector = _load(path)
    args = (
        vector["leafIdx"],
        vector["treeSize"],
        unb64(vector["leafHash"]),
        [unb64(h) for h in vector["proof"] or []],
        unb64(vector["root"]),
    )
    if vector["wantErr"]:
        with pytest.raises(ProofError) as info:
            verify_inclusion(*args)
        assert info.value.reason  # a reason, not an empty message
    else:
        verify_inclusion(*args)
    # The recursive oracle agrees on every vector, so the vectors check it as well.
    assert slow.inclusion_holds(*args) == (not vector["wantErr"])
