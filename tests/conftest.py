"""Fixtures shared by every test; the helpers they use live in ``helpers.py``.

Real data: the ``real_data`` fixture is the only place that reads ``$MEDREP_DATA`` (CI sets it to
``../shared/data`` when that folder exists). A test that asks for it is skipped without it, and
``real_data.need("volumes/x.nii.gz")`` skips when that file is missing from the folder.
"""

import os
import warnings
from pathlib import Path

import pytest
from helpers import make_npz

warnings.filterwarnings("ignore")


class RealData(type(Path())):
    """``$MEDREP_DATA`` as a Path, with :meth:`need` for files that some copies of the folder lack."""

    def need(self, relative: str) -> Path:
        path = self / relative
        if not path.exists():
            pytest.skip(f"{relative} is not in $MEDREP_DATA ({self})")
        return path


@pytest.fixture(scope="session")
def real_data() -> RealData:
    """The real data folder from ``$MEDREP_DATA``; the requesting test is skipped when it is unset."""
    root = os.environ.get("MEDREP_DATA")
    if not root or not Path(root).is_dir():
        pytest.skip("needs the real data: set MEDREP_DATA to the shared data folder")
    return RealData(root)


@pytest.fixture
def tiny_npz(tmp_path) -> Path:
    return make_npz(tmp_path / "tiny.npz")
