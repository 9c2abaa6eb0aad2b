"""What rnncli knows about writing systems, for tokenization and its warnings. Light.

Chinese and Japanese are written without spaces between words; rnncli makes each of their
characters a token (``model.standardize_cjk``; the character classes themselves come from
TensorFlow's RE2, recorded in ``serving.npz`` for the ONNX engine). Thai, Lao, Khmer and
Burmese are written without spaces too, but a character there is not a unit of meaning
(vowel and tone marks are codepoints of their own), so rnncli does not split them and
says so when it trains on them.
"""

from __future__ import annotations

import re

# Full-width forms read as ASCII: each is its ASCII form plus the offset. ！ to ～, but for
# ＜ and ＞: Japanese brackets a phrase with them, which as < and > would make an HTML tag
# that standardization removes, words and all. (As symbols they still separate tokens.)
FULLWIDTH_RANGES = ((0xFF01, 0xFF1B), (0xFF1D, 0xFF1D), (0xFF1F, 0xFF5E))
FULLWIDTH_OFFSET = 0xFEE0
FULLWIDTH_TO_ASCII = {c: c - FULLWIDTH_OFFSET for first, last in FULLWIDTH_RANGES
                      for c in range(first, last + 1)}

# Marks that stay with the Chinese or Japanese character before them when characters
# become tokens: the voiced sound marks (combining, and half-width ﾞﾟ, so ｶﾞ stays one
# token) and variation selectors (葛 with U+E0100 is one glyph).
SPLIT_MARKS = ((0x3099, 0x309A), (0xFF9E, 0xFF9F), (0xFE00, 0xFE0F), (0xE0100, 0xE01EF))

# Scripts without spaces that rnncli leaves unsplit (Unicode blocks).
_UNSPLIT = {
    "Thai": "\u0e00-\u0e7f",
    "Lao": "\u0e80-\u0eff",
    "Burmese": "\u1000-\u109f\ua9e0-\ua9ff\uaa60-\uaa7f",
    "Khmer": "\u1780-\u17ff\u19e0-\u19ff",
}
_UNSPLIT_RE = {name: re.compile(f"[{chars}]") for name, chars in _UNSPLIT.items()}
# Texts look unsegmented when over UNSEGMENTED_SHARE of the token occurrences are longer
# than LONG_TOKEN characters. Measured: English reviews (IMDB) 2%; Chinese hotel reviews
# split at spaces and punctuation only (clauses as tokens, as rnncli did before it split
# Chinese) 32%, over 20 characters only 3%.
LONG_TOKEN = 10
UNSEGMENTED_SHARE = 0.25
SCRIPT_SHARE = 0.05  # of texts, from which a script is worth a warning


def unsplit_scripts(texts: list[str]) -> list[str]:
    """The scripts written without spaces that rnncli does not split, found in at least
    ``SCRIPT_SHARE`` of the texts."""
    if not texts:
        return []
    return [name for name, pattern in _UNSPLIT_RE.items()
            if sum(1 for t in texts if pattern.search(t)) >= SCRIPT_SHARE * len(texts)]


def segmentation_warnings(texts: list[str], long_share: float) -> list[str]:
    """Warnings for training texts whose words rnncli cannot find: ``long_share`` is the
    share of token occurrences longer than ``LONG_TOKEN`` characters."""
    warnings = []
    scripts = unsplit_scripts(texts)
    if scripts:
        names = " and ".join(scripts)
        warnings.append(f"texts in {names} are not split into words (rnncli splits "
                        "only Chinese and Japanese into characters); put spaces between "
                        "words first (a word segmenter such as PyThaiNLP for Thai) or the "
                        "model learns whole phrases as rare tokens")
    if long_share > UNSEGMENTED_SHARE:
        warnings.append(f"{long_share:.0%} of the tokens are longer than {LONG_TOKEN} "
                        "characters: the texts look unsegmented (no spaces between words); "
                        "put spaces between words first, or the model sees mostly unknown "
                        "tokens")
    return warnings
