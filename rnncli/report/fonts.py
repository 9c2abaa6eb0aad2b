"""Class names the report's plots can draw.

matplotlib's own font (DejaVu Sans) has no Chinese or Japanese glyphs: such names came out
as boxes, with a "Glyph ... missing" warning. Where a font on the machine has the glyphs
(Noto Sans CJK, Source Han Sans, WenQuanYi, ...), the plots draw the names with it (as a
fallback after the usual font); where none has, the plots call the classes "class 1",
"class 2", ... and the page lists which is which.

Light: matplotlib is imported by the functions, when a report is drawn.
"""

from __future__ import annotations

from dataclasses import dataclass

# Families tried first (common CJK fonts on Linux, macOS and Windows); then any other.
CJK_FAMILIES = ("Noto Sans CJK", "Noto Serif CJK", "Noto Sans SC", "Noto Sans TC",
                "Noto Sans JP", "Noto Sans HK", "Source Han Sans", "Source Han Serif",
                "WenQuanYi", "Droid Sans Fallback", "AR PL", "IPAGothic", "IPAexGothic",
                "TakaoGothic", "VL Gothic", "Microsoft YaHei", "SimHei", "PingFang",
                "Hiragino", "Yu Gothic", "MS Gothic")
# Fonts that map every character to a placeholder: "covering" a name, they draw boxes.
PLACEHOLDER_FONTS = ("Last Resort",)


@dataclass(frozen=True)
class PlotNames:
    """How the plots name the classes."""

    names: list[str]  # as drawn, in class order
    families: list[str] | None  # matplotlib's font.family to draw them with; None: as is
    stand_ins: list[tuple[str, str]]  # (name drawn, class name) where the two differ


def plot_names(names: list[str]) -> PlotNames:
    """The class names as the plots can draw them: the names themselves, in the usual
    font or with a font of the machine that has their characters; else "class 1", ...."""
    import matplotlib
    from matplotlib import font_manager

    families = list(matplotlib.rcParams["font.family"])
    usual = font_manager.findfont(font_manager.FontProperties(family=families))
    missing = _characters(names) - charmap(usual)
    if not missing:
        return PlotNames(list(names), None, [])
    found = covering_font(missing, _fonts())
    if found is not None:
        return PlotNames(list(names), [*families, found], [])
    drawn = [f"class {i + 1}" for i in range(len(names))]
    return PlotNames(drawn, None, list(zip(drawn, names)))


def covering_font(characters: set[int], fonts: list[tuple[str, str]]) -> str | None:
    """The family of the first of ``fonts`` ((family, file) pairs) that has a glyph for
    every one of ``characters`` (code points), placeholder fonts left out; or None."""
    for family, path in fonts:
        if family.startswith(PLACEHOLDER_FONTS):
            continue
        if characters <= charmap(path):
            return family
    return None


def charmap(path: str) -> set[int]:
    """The code points a font file has glyphs for (none if it cannot be read)."""
    from matplotlib.ft2font import FT2Font

    try:
        return set(FT2Font(path).get_charmap())
    except (OSError, RuntimeError, ValueError):
        return set()


def _fonts() -> list[tuple[str, str]]:
    """(family, file) of the fonts matplotlib knows, common CJK families first."""
    from matplotlib import font_manager

    fonts = sorted({(f.name, f.fname) for f in font_manager.fontManager.ttflist})
    return sorted(fonts, key=lambda f: not f[0].startswith(CJK_FAMILIES))


def _characters(names: list[str]) -> set[int]:
    return {ord(c) for name in names for c in name if not c.isspace()}
