"""Bytes -> text for the data reader: strict decoding, never silent replacement.

A file is read as UTF-8 unless a byte-order mark or ``--encoding`` says otherwise. A file
that is not UTF-8 is either a UTF-8 file with a few stray bytes (an error that names the
first one) or a file in another encoding, which is detected: charset-normalizer proposes
candidates and a small plausibility score of our own chooses between them, because on a
file of a few rows the detector guesses (it called a GBK file cp949, a Big5 one cp932, a
cp1252 one cp932, and French cp1252 text cp1250, which turns è into č; all at chaos 0 and
coherence 0, so its own ranking could not tell them apart). A byte that does not fit the
encoding the rest of the file looks like is an error naming it too, and so is a byte that
cp1252 lacks amid ASCII: some codec reads every byte, and would garble the whole file.

Light core: charset-normalizer is imported only when a file is not UTF-8.
"""

from __future__ import annotations

import codecs
import functools
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from rnncli.core.errors import DataError


@dataclass(frozen=True)
class Decoded:
    """A file's text, the codec that produced it, and (when it was detected) the line of
    the first byte that was not UTF-8."""

    text: str
    encoding: str
    first_bad_line: int | None = None


def decode(path: Path, raw: bytes, encoding: str | None = None) -> Decoded:
    """Decode ``raw`` strictly: ``encoding`` when given, else by byte-order mark, else UTF-8,
    else by detection. Raises DataError naming the line of a byte that does not fit."""
    if encoding:
        data = raw[len(codecs.BOM_UTF8):] if _is_utf8(encoding) and _has_utf8_bom(raw) else raw
        return Decoded(_strict(path, data, encoding, "check --encoding, or fix the bytes in "
                               "the file"), encoding)
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return Decoded(_strict(path, raw, "utf-16", _PASS_ENCODING), "utf-16")
    if _has_utf8_bom(raw):  # a BOM says UTF-8: a bad byte is an error, not a reason to guess
        return Decoded(_strict(path, raw[len(codecs.BOM_UTF8):], "utf-8", _PASS_ENCODING),
                       "utf-8")
    try:
        return Decoded(raw.decode("utf-8"), "utf-8")
    except UnicodeDecodeError as exc:
        first_bad = exc.start
    line = _line_of(raw, first_bad)
    if b"\x00" in raw:
        # NUL bytes: a binary file, which no candidate would read as text. latin-1 maps
        # every byte, so read_table's NUL check says "binary file" (with its line) rather
        # than a misleading "encoding not recognised".
        return Decoded(raw.decode("latin-1"), "latin-1", line)
    if _mostly_utf8(_window(raw, 0, first_bad + _SAMPLE_BYTES)):
        raise DataError(f"{path}: line {line}: byte 0x{raw[first_bad]:02x} is not valid UTF-8, "
                        "though the rest of the file is UTF-8; fix that byte, or pass --encoding")
    _check_too_few_to_detect(path, raw)
    return _detect(path, raw, line, first_bad)


_PASS_ENCODING = "pass --encoding with the file's encoding"
# Bytes that detection reads: enough for the detector and thousands of characters to
# judge, and it keeps a big file fast (34 MB of cp1252 reviews: the detector alone takes
# a second and a half on all of it).
_SAMPLE_BYTES = 256 * 1024


def _window(raw: bytes, start: int, end: int) -> bytes:
    """raw[start:end], cut after its last newline when the file goes on (in UTF-8 and the
    ASCII-based encodings that detection keeps, a newline byte is never part of a
    character)."""
    if end >= len(raw):
        return raw[start:]
    cut = raw.rfind(b"\n", start, end)
    return raw[start:cut + 1] if cut >= 0 else raw[start:]


def _strict(path: Path, data: bytes, name: str, hint: str) -> str:
    try:
        return data.decode(name)
    except LookupError as exc:
        raise DataError(f"unknown encoding {name!r}; try utf-8, cp1252 or latin-1") from exc
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: line {_line_of(data, exc.start)}: byte "
                        f"0x{data[exc.start]:02x} is not valid {name}; {hint}") from exc
    except UnicodeError as exc:  # codecs such as punycode and undefined name no byte
        why = exc.__cause__ or exc  # Python wraps it: "decoding with 'x' codec failed (...)"
        raise DataError(f"{path}: cannot be read as {name} ({why}); pass another "
                        "--encoding") from exc


def _is_utf8(name: str) -> bool:
    try:
        return codecs.lookup(name).name == "utf-8"
    except LookupError:
        return False  # _strict reports the unknown name


def _has_utf8_bom(raw: bytes) -> bool:
    return raw.startswith(codecs.BOM_UTF8)


def _line_of(data: bytes, offset: int) -> int:
    return data.count(b"\n", 0, offset) + 1


# --------------------------------------------------------------------------- stray bytes


def _mostly_utf8(raw: bytes) -> bool:
    """A UTF-8 file with stray bytes, rather than text in another encoding.

    Counts well-formed multi-byte UTF-8 characters that read as real text (``_plausible``)
    against bytes that are not UTF-8, in the sample that _plausibility() reads. Text in
    another encoding makes well-formed ones by chance (a lead byte 0xc2-0xf4 then
    0x80-0xbf): a third as many as bad bytes in the GB18030 hotel reviews, Shift-JIS and
    EUC-JP, and more than the bad bytes in some short GBK sentences (性价比很高，推荐: 6
    to 4), so a bare count cannot tell; but those are stray letters of other scripts amid
    the bad bytes, which score nothing. A real UTF-8 file's characters do score, so
    "at least as many plausible characters as bad bytes" calls one é beside one stray byte
    UTF-8 (reading it as cp1252 would garble the é) and leaves a half-and-half file an
    error rather than a silent mix.
    """
    good = bad = 0
    for run in _sample_runs(raw.decode("utf-8", "surrogateescape")):
        good += sum(_plausible_flags(run))
        bad += len(_ESCAPED.findall(run))
    return good >= bad


_ESCAPED = re.compile("[\udc80-\udcff]")  # the bytes that surrogateescape could not decode


def _check_too_few_to_detect(path: Path, raw: bytes) -> None:
    """A file with a handful of non-ASCII bytes that cp1252 cannot read has a stray byte.

    Some code page reads any one byte as a letter (0x81 is Б in cp1125), and a letter or
    two is no evidence of an encoding, so detection would pick that code page.
    """
    if len(raw.translate(None, _ASCII_BYTES)) > _FEW_BYTES:
        return
    try:
        raw.decode("cp1252")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: line {_line_of(raw, exc.start)}: byte "
                        f"0x{raw[exc.start]:02x} is neither UTF-8 nor cp1252, and too few "
                        "bytes are non-ASCII to tell another encoding; fix that byte, or pass "
                        "--encoding") from exc


_ASCII_BYTES = bytes(range(0x80))
# Non-ASCII bytes too few to detect from: two characters of a CJK encoding. Common
# characters of GBK and Big5 avoid the bytes cp1252 lacks; two kanji of Shift-JIS need not.
_FEW_BYTES = 4


# --------------------------------------------------------------------------- detection


def _detect(path: Path, raw: bytes, line: int, first_bad: int) -> Decoded:
    """The most plausible codec for the file, with cp1252 first on ties.

    The detector and the score read a window that starts at the line of the first byte
    that is not UTF-8 (so it holds what needs detecting). A reading is scored with the
    bytes it cannot decode counted against it, so the codec of a file with one stray byte
    or a cut character still looks best; the file is then decoded with the best candidate
    that fits all of it, unless one that does not fit looks clearly better: then the
    file has a stray byte, and the lesser codec would garble all of it.
    """
    from charset_normalizer import from_bytes  # here only: most files are UTF-8

    sample = _window(raw, raw.rfind(b"\n", 0, first_bad) + 1, first_bad + _SAMPLE_BYTES)
    scores = {}
    for name in _candidates(from_bytes(sample)):
        try:
            scores[name] = _plausibility(sample.decode(name, "surrogateescape"))
        except UnicodeDecodeError:  # surrogateescape cannot stand in for an ASCII byte
            continue
    misfit = None  # the best-looking candidate that the file does not fit, and where
    for name in sorted(scores, key=scores.__getitem__, reverse=True):  # stable: ties keep order
        try:
            text = raw.decode(name)
        except UnicodeDecodeError as exc:
            misfit = misfit or (name, exc)
            continue
        if misfit and _looks_better(scores[misfit[0]], than=scores[name]):
            raise _misfit_error(path, raw, *misfit) from misfit[1]
        return Decoded(text, name, line)
    if misfit and _looks_better(scores[misfit[0]]):
        raise _misfit_error(path, raw, *misfit) from misfit[1]
    raise DataError(f"{path}: encoding not recognised: line {line}: byte "
                    f"0x{raw[first_bad]:02x} is not valid UTF-8, and no other encoding "
                    f"fits the file; {_PASS_ENCODING}")


def _candidates(matches: Iterable) -> list[str]:
    """cp1252, then the detector's candidates, then the common CJK codecs: those that read
    ASCII as ASCII, as CSV and JSON need (not EBCDIC, UTF-7, shift_jis_2004's ¥).

    cp1252 leads so that it wins ties: Western text is what a detector gets wrong on small
    files (cp1250, cp1257), and those decodes score as well as the right one. Then the
    detector's order, each match's codec before the aliases that gave the same text
    (could_be_from_charset). Last the common CJK codecs, because the detector gives up on
    some files (one garbled row among Chinese ones, a stray byte).
    """
    names = ["cp1252"]
    for match in matches:
        names.extend(n for n in (match.encoding, *match.could_be_from_charset)
                     if n not in names)
    names.extend(n for n in _CJK if n not in names)
    kept = []
    for name in names:
        try:
            if _ASCII.decode(name, "replace") == _ASCII.decode():
                kept.append(name)
        except LookupError:
            continue
    return kept


def _looks_better(score: float, *, than: float = float("-inf")) -> bool:
    """Whether a reading that does not fit the file looks like real text, and clearly more
    so than the best one that fits (cp950 and big5 tie on a sample without a euro sign)."""
    return score >= _LOOKS_LIKE_TEXT and score > than + _CLEARLY


def _misfit_error(path: Path, raw: bytes, name: str, exc: UnicodeDecodeError) -> DataError:
    where = f"{path}: line {_line_of(raw, exc.start)}:"
    if exc.end == len(raw) and exc.reason.startswith("incomplete"):
        return DataError(f"{where} the file ends inside a {name} character, which the rest of "
                         "the file looks like (was it cut short?); fix its end, or pass "
                         "--encoding")
    return DataError(f"{where} byte 0x{raw[exc.start]:02x} does not fit {name}, which the rest "
                     "of the file looks like; fix that byte, or pass --encoding")


_ASCII = bytes(range(0x20, 0x7F)) + b"\t\n\r"
_CJK = ("gb18030", "big5", "cp932", "cp949")  # supersets of GBK, Shift-JIS and EUC-KR
# A byte that a codec cannot decode costs ten times what a plausible character earns, so
# only a codec that fits all but a few bytes of the sample can still look like text.
_PENALTY = 10
# What a reading that does not fit must score to be called the file's codec (the golden
# files score 1.0 to 1.34 in theirs), and by how much it must beat the best one that fits.
_LOOKS_LIKE_TEXT = 0.6
_CLEARLY = 0.2

# The most frequent characters of Chinese (simplified and traditional), Japanese and
# Korean text: particles and function words. GB2312, KS X 1001 and JIS X 0208 share one
# byte layout, so Korean read as GBK is all GB2312 level-1 characters and Chinese read as
# cp949 mostly KS X 1001 syllables; only the language itself tells them apart.
_FREQUENT = frozenset("的一是不了在人有我他这這个個们們中来來上大为為和国國地到以说說时時要就"
                      "出会會可也你对對很好没沒还還都"
                      "のにはをたがでてとしれさるいかなうもっすまん"
                      "이다에의는로하을가고지서한은기으를리도인일요어아게있해나니만수")


def _plausibility(text: str) -> float:
    """How much the non-ASCII characters (the first few thousand) look like real text: the
    share that is common for its script (``_plausible``), plus the share among the most
    frequent characters of Chinese, Japanese or Korean; 0 to 2, less _PENALTY for each
    byte that the codec could not decode (escaped by surrogateescape). A wrong decoding
    makes rare or out-of-place characters, and bytes that do not fit."""
    good = bad = total = 0
    for run in _sample_runs(text):
        good += sum(_plausible_flags(run)) + sum(ch in _FREQUENT for ch in run)
        bad += len(_ESCAPED.findall(run))
        total += len(run)
    return (good - _PENALTY * bad) / total if total else 0.0


_SAMPLE_CHARS = 4096  # non-ASCII characters judged: enough, and fast on big files
_NON_ASCII_RUN = re.compile("[^\x00-\x7f]+")
_HAN = re.compile("[\u4e00-\u9fff]")
_HANGUL = re.compile("[\uac00-\ud7a3]")


def _sample_runs(text: str):
    """The runs of non-ASCII characters, up to _SAMPLE_CHARS characters in all."""
    left = _SAMPLE_CHARS
    for match in _NON_ASCII_RUN.finditer(text):
        run = match.group()[:left]
        yield run
        left -= len(run)
        if not left:
            return


def _plausible_flags(run: str) -> list[bool]:
    """Whether each character of a run (between ASCII characters) is plausible there.

    Western text has short runs inside ASCII words (café, “it’s”), so an accented letter
    or a curly quote counts only at either end of its run, while CJK read as cp1252 makes
    long runs of Latin-1 letters. Letters of other alphabets count in whole words. Korean
    writes Hanja apart from Hangul if at all, so a run holding both is Chinese read as
    cp949 (or the reverse), and neither counts.
    """
    word = all(ch.isalpha() or unicodedata.category(ch)[0] == "M" for ch in run)
    mixed = _HAN.search(run) is not None and _HANGUL.search(run) is not None
    last = len(run) - 1
    return [_plausible(ch, edge=i in (0, last), word=word, mixed=mixed)
            for i, ch in enumerate(run)]


# Western punctuation that cp1252 files carry: curly quotes, dashes, ellipsis, no-break space.
_WESTERN_PUNCTUATION = frozenset("\u2018\u2019\u201a\u201c\u201d\u201e\u2013\u2014\u2026"
                                 "\u2022\u00a0\u00ab\u00bb\u00a1\u00bf\u00b0\u20ac\u00a3")


def _plausible(ch: str, *, edge: bool, word: bool, mixed: bool) -> bool:
    code = ord(ch)
    if 0x4E00 <= code <= 0x9FFF:
        return not mixed and _common_han(ch)
    if 0xAC00 <= code <= 0xD7A3:  # Hangul syllables: the 2,350 of KS X 1001 are the common
        return not mixed and _common_hangul(ch)  # ones; cp949 reads other CJK as the rest
    if (0x3000 <= code <= 0x30FF  # CJK punctuation, hiragana, katakana
            or 0x3131 <= code <= 0x318E  # Hangul jamo (ㅋㅋ, ㅠㅠ)
            or 0xFF01 <= code <= 0xFF5E  # full-width forms (，！？), not half-width kana
            or 0x1F300 <= code <= 0x1FAFF):  # emoji, which no legacy encoding makes
        return True
    if (0xC0 <= code <= 0x17F and ch.isalpha()) or ch in _WESTERN_PUNCTUATION:
        return edge
    if 0x370 <= code <= 0x1FFF:  # Greek, Cyrillic, Hebrew, Arabic, Thai ...: whole words
        return word  # of letters and marks, not letters amid symbols
    return False  # C1 controls, private use, box drawing, half-width kana, rare Han ...


@functools.lru_cache(maxsize=8192)
def _common_han(ch: str) -> bool:
    """In the frequent tier of a national standard: GB2312 level 1 (lead byte 0xb0-0xd7),
    Big5's common characters (0xa4-0xc6) or JIS X 0208 level 1 (EUC-JP 0xb0-0xcf)."""
    return (0xB0 <= _lead_byte(ch, "gb2312") <= 0xD7 or 0xA4 <= _lead_byte(ch, "big5") <= 0xC6
            or 0xB0 <= _lead_byte(ch, "euc_jp") <= 0xCF)


@functools.lru_cache(maxsize=4096)
def _common_hangul(ch: str) -> bool:
    try:  # Python's euc_kr writes the other syllables as 8-byte jamo sequences
        return len(ch.encode("euc_kr")) == 2
    except UnicodeEncodeError:
        return False


def _lead_byte(ch: str, codec: str) -> int:
    try:
        return ch.encode(codec)[0]
    except UnicodeEncodeError:
        return -1
