"""Replace the text between a README's ``<!-- NAME:start -->`` and ``<!-- NAME:end -->`` markers, so
that each benchmark script rewrites only its own generated table."""

from __future__ import annotations

from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def write_section(name: str, text: str, readme: Path = README) -> bool:
    """Put ``text`` between the markers of ``name``; False (README untouched) when they are absent."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    body = readme.read_text()
    if start not in body or end not in body:
        return False
    head, rest = body.split(start, 1)
    readme.write_text(f"{head}{start}\n{text}\n{end}{rest.split(end, 1)[1]}")
    return True
