"""Radiology report text: sections, sentences and clean whitespace.

Vision-language pretraining pairs an image with the part of its report that describes the image
(MIMIC-CXR practice: FINDINGS and IMPRESSION, not the INDICATION that names the question) and,
for sentence-level objectives, with single sentences. Real reports are messy: hard-wrapped lines,
numbered impressions, decimals ("5.5 cm"), abbreviations ("e.g.", "Dr."), missing spaces after a
full stop ("clear.There"), doubled stops ("effusion..") and de-identification placeholders
("XXXX" in IU X-ray, "___" in MIMIC). These functions are pure, so they can be checked on real
text and reused by any reader.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from pathlib import Path

from ...errors import DataError

#: headers recognised whatever their case (MIMIC-CXR and IU X-ray); other ALL-CAPS "HEADER:" lines count too
KNOWN_HEADERS = (
    "findings", "impression", "indication", "indications", "comparison", "comparisons", "history",
    "clinical history", "technique", "examination", "exam", "reason for examination", "reason for exam",
    "clinical information", "conclusion", "conclusions", "recommendation", "recommendations",
    "notification", "wet read", "addendum", "procedure", "type of examination",
)
_KNOWN = "|".join(re.escape(h).replace(r"\ ", r"\s+") for h in sorted(KNOWN_HEADERS, key=len, reverse=True))
_HEADER = re.compile(
    rf"^[ \t]*(?:(?P<known>{_KNOWN})|(?P<caps>[A-Z][A-Z/&()' -]{{1,40}}?))[ \t]*:", re.MULTILINE | re.IGNORECASE
)
_PREAMBLE = re.compile(r"^\s*final\s+report\s*$", re.IGNORECASE | re.MULTILINE)
#: de-identification placeholders: IU X-ray "XXXX", MIMIC "___", MIMIC-III "[** ... **]"
PLACEHOLDER = re.compile(r"\bX{2,}\b|_{2,}|\[\*\*.*?\*\*\]")
#: tokens ending in "." that do not end a sentence (compared in lower case, without the final ".")
ABBREVIATIONS = frozenset({
    "e.g", "i.e", "eg", "ie", "dr", "drs", "vs", "v", "mr", "mrs", "ms", "prof", "approx", "appt", "cf", "fig",
    "figs", "st", "jr", "sr", "incl", "a.m", "p.m", "pt", "pts", "ca", "resp", "sq", "hx", "dx", "y.o",
})
_END = re.compile(r"[.!?]+[\"')\]]*(?=\s)|(?<=[a-z]{2})[.!?]+(?=[A-Z][a-z])")
_MARKER = re.compile(r"(?:^|(?<=\n)|(?<=[.!?:;]))\s*(?P<n>\d{1,2})[.)](?=\s)")
_NEXT_MARKER = r"(?<=\s)(?P<n>{n})[.)](?=\s)"
_DOTTED = re.compile(r"(?:[a-z]\.){2,}[a-z]?$", re.IGNORECASE)


def _as_text(text: str | bytes, where: str | Path | None = None) -> str:
    """``text`` as a str in Unicode NFC with "\\n" line breaks; bytes must be UTF-8."""
    if isinstance(text, (bytes, bytearray)):
        try:
            text = bytes(text).decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise DataError(f"report is not UTF-8 text ({exc.reason} at byte {exc.start})", where) from exc
    if not isinstance(text, str):
        raise DataError(f"report must be text, got {type(text).__name__}", where)
    return unicodedata.normalize("NFC", text.replace("\r\n", "\n").replace("\r", "\n"))


def clean_text(text: str | bytes, where: str | Path | None = None) -> str:
    """One line of text: Unicode NFC, every whitespace run (newlines included) one space, stripped.

    Bytes are decoded as UTF-8; text that is not UTF-8 or not text at all raises :class:`DataError`
    naming ``where`` (a file, a manifest row), so a broken report is found, not garbled.
    """
    return " ".join(_as_text(text, where).split())


def read_text_file(path: str | Path) -> str:
    """A report file (e.g. MIMIC-CXR ``sYYYYYYYY.txt``) as text with its line breaks kept for
    :func:`split_sections`; a missing or non-UTF-8 file raises :class:`DataError` naming it."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read report ({exc.strerror or exc})", path) from exc
    return _as_text(data, path)


def _key(header: str) -> str:
    return " ".join(header.lower().split())


def split_sections(text: str) -> dict[str, str]:
    """``{section: text}`` for a report with ``HEADER:`` lines; keys lower case in order of appearance.

    A header starts a line and ends with ":" (its text may follow on the same line). Known headers
    (:data:`KNOWN_HEADERS`) match in any case; other headers must be ALL CAPS, so that a sentence
    such as "Heart: normal" is not taken for one. A "FINAL REPORT" line is dropped; other text
    before the first header is kept as ``"preamble"``; a repeated header's texts are joined;
    empty sections are left out. Text with no header at all is ``{"report": text}``.
    """
    text = _PREAMBLE.sub("", _as_text(text))
    matches = [m for m in _HEADER.finditer(text) if m.group("known") or m.group("caps").isupper()]
    if not matches:
        stripped = text.strip()
        return {"report": stripped} if stripped else {}
    parts: list[tuple[str, str]] = [("preamble", text[: matches[0].start()])]
    for m, nxt in zip(matches, [*matches[1:], None]):
        parts.append((_key(m.group("known") or m.group("caps")), text[m.end() : nxt.start() if nxt else len(text)]))
    sections: dict[str, str] = {}
    for key, body in parts:
        body = "\n".join(line.strip() for line in body.strip().splitlines())
        if body:
            sections[key] = f"{sections[key]}\n{body}" if key in sections else body
    return sections


def report_text(text: str, sections: Sequence[str] = ("findings", "impression")) -> str:
    """The wanted ``sections`` that are present, in the order asked, joined by a blank line.

    When none of them is present (a report without headers, or only INDICATION and the like), the
    whole text is used, minus a "FINAL REPORT" line: dropping such reports would bias a data set
    towards the well-structured ones, and the image still matches its text. Line breaks are kept,
    so :func:`split_sentences` still sees numbered lists; use :func:`clean_text` for one line.
    """
    found = split_sections(text)
    chosen = [found[s] for s in (x.lower() for x in sections) if s in found]
    if chosen:
        return "\n\n".join(chosen)
    return _PREAMBLE.sub("", _as_text(text)).strip()


def _has_content(sentence: str) -> bool:
    return any(ch.isalnum() for ch in PLACEHOLDER.sub(" ", sentence))


def _list_items(paragraph: str) -> list[str]:
    """Split a paragraph before each item of a numbered list "1. ... 2. ..." and drop the numbers.

    A list starts with "1." (or "1)") after a sentence end, or with any number at the start of a
    line (a list continued from an earlier paragraph); the next item is the next number, wherever
    it is, so "1. No effusion 2. Clear" splits while a lone "measures 2. The" does not.
    """
    first = next((m for m in _MARKER.finditer(paragraph) if _starts_list(paragraph, m)), None)
    if first is None:
        return [paragraph]
    items, starts, n, pos = [paragraph[: first.start()]], [first], int(first.group("n")) + 1, first.end()
    while (m := re.compile(_NEXT_MARKER.format(n=n)).search(paragraph, pos)) is not None:
        starts.append(m)
        n, pos = n + 1, m.end()
    for m, nxt in zip(starts, [*starts[1:], None]):
        items.append(paragraph[m.end() : nxt.start() if nxt else len(paragraph)])
    return items


def _at_line_start(text: str, m: re.Match) -> bool:
    return not text[: m.start("n")].rsplit("\n", 1)[-1].strip()


def _starts_list(text: str, m: re.Match) -> bool:
    if _at_line_start(text, m):
        return True
    before = text[: m.start("n")].split()
    return m.group("n") == "1" and not (before and before[-1].endswith(".") and _is_abbreviation(before[-1]))


def _is_abbreviation(token: str) -> bool:
    """Known abbreviations, dotted ones ("e.g.") and single letters ("R. basal ganglia", initials)."""
    word = token.rstrip(".!?\"')]").lstrip("(\"'[").lower()
    return word in ABBREVIATIONS or len(word) == 1 and word.isalpha() or bool(_DOTTED.fullmatch(word + "."))


def _sentences(item: str) -> list[str]:
    out, start = [], 0
    for m in _END.finditer(item):
        words = item[start : m.end()].split()
        if m.group().rstrip("\"')]") == "." and words and _is_abbreviation(words[-1]):
            continue
        out.append(item[start : m.end()])
        start = m.end()
    out.append(item[start:])
    return out


def split_sentences(text: str) -> list[str]:
    """The sentences of a report, each on one line, in order; none empty or punctuation only.

    Boundaries: a blank line; the items of a numbered list (numbers dropped); ".", "!" or "?"
    (repeated, or followed by a closing quote or bracket) before a space, or glued to the next
    capitalised word ("clear.There"). Not boundaries: decimals ("5.5 cm"), single line breaks
    (hard wraps), the abbreviations in :data:`ABBREVIATIONS`, dotted ones ("e.g.", "U.S.") and
    single letters ("R. MCA", so "Figure A. Axial" stays one sentence too).
    Placeholders such as "XXXX" and "___" stay in their sentence; a sentence with nothing but
    placeholders and punctuation is dropped.
    """
    sentences: list[str] = []
    for paragraph in re.split(r"\n[ \t]*\n", _as_text(text)):
        for item in _list_items(paragraph):
            sentences.extend(clean_text(s) for s in _sentences(item))
    return [s for s in sentences if _has_content(s)]
