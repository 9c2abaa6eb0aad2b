"""The README and the docs/ pages: their statements about the code stay true of it, the
README stays the first screen, and every page is part of the built site."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README_LIMIT = 16 * 1024  # bytes: the README is the first screen; the rest lives in docs/
# The two commands CI and people copy: they open the README, before anything else.
FIRST_LINES = """\
```bash
python -m venv .venv && . .venv/bin/activate && pip install '.[train]' && rnncli train \
sample_data/imdb_sample.csv.gz --cell gru && rnncli predict "a wonderful, moving film"
pip install -e '.[test]' && python -m pytest
```
"""


def _layout_paragraph() -> str:
    page = ROOT.joinpath("docs", "development.md").read_text(encoding="utf-8")
    return page[page.index("The code layout follows"):]


def modules_the_layout_misses(layout: str) -> tuple[list[str], list[str]]:
    """Modules of rnncli/ (paths inside it, subpackages included) the paragraph does not
    name, and names it gives that are no module."""
    package = ROOT / "rnncli"
    modules = sorted(p.relative_to(package).as_posix() for p in package.rglob("*.py")
                     if p.name != "__init__.py")
    missing = [name for name in modules if f"`{name}`" not in layout]
    named = {word.strip("`,:;()") for word in layout.split()}
    gone = sorted(n for n in named if n.endswith(".py") and not (package / n).is_file())
    return missing, gone


def test_the_layout_paragraph_names_every_module():
    missing, gone = modules_the_layout_misses(_layout_paragraph())
    assert not missing, f"docs/development.md's layout paragraph does not name {missing}"
    assert not gone, f"docs/development.md's layout paragraph names missing modules: {gone}"


def test_the_layout_check_fails_when_a_module_is_left_out():
    layout = _layout_paragraph()
    assert "`modeldir/onnxwire.py`" in layout
    missing, _ = modules_the_layout_misses(layout.replace("`modeldir/onnxwire.py`",
                                                          "the wire reader"))
    assert missing == ["modeldir/onnxwire.py"]
    _, gone = modules_the_layout_misses(layout + " `nosuchmodule.py`")
    assert gone == ["nosuchmodule.py"]


def test_the_readme_is_a_first_screen_that_starts_with_the_two_commands():
    raw = ROOT.joinpath("README.md").read_bytes()
    assert len(raw) <= README_LIMIT, f"README.md is {len(raw)} bytes; move detail to docs/"
    assert raw.decode("utf-8").startswith(FIRST_LINES)


def test_every_docs_page_is_in_the_nav():
    # mkdocs build --strict (in .ci/run) fails on a page left out of the nav too
    # (validation.omitted_files: warn); this says which page without building the site.
    config = ROOT.joinpath("mkdocs.yml").read_text(encoding="utf-8")
    nav = config[config.index("\nnav:"):]
    pages = sorted(p.relative_to(ROOT / "docs").as_posix() for p in (ROOT / "docs").rglob("*.md"))
    assert pages, "docs/ holds no page"
    left_out = [page for page in pages if f": {page}\n" not in nav + "\n"]
    assert not left_out, f"mkdocs.yml's nav leaves out {left_out}"


def test_the_docs_cite_only_what_the_repository_holds():
    for page in [ROOT / "README.md", *(ROOT / "docs").rglob("*.md")]:
        text = page.read_text(encoding="utf-8")
        for outside in ("../shared", "KERAS_NOTES"):
            assert outside not in text, f"{page.name} cites {outside}, which users do not have"


def test_the_readmes_links_into_the_repository_lead_somewhere():
    # MkDocs checks the links between docs/ pages; the README is not one of its pages.
    readme = ROOT.joinpath("README.md").read_text(encoding="utf-8")
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", readme)
    local = [t for t in targets if "://" not in t]
    assert any(t.startswith("docs/") for t in local), "the README links to no docs/ page"
    broken = sorted({t for t in local if not (ROOT / t).exists()})
    assert not broken, f"README.md links to files that do not exist: {broken}"
