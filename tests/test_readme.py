"""The README's statements about the code stay true of it."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_layout_paragraph_names_every_module():
    readme = ROOT.joinpath("README.md").read_text(encoding="utf-8")
    layout = readme[readme.index("The code layout follows"):readme.index("## Sample data")]
    modules = sorted(p.name for p in (ROOT / "rnncli").glob("*.py")
                     if p.name not in ("__init__.py", "__main__.py"))
    missing = [name for name in modules if f"`{name}`" not in layout]
    assert not missing, f"README's layout paragraph does not name {missing}"
    named = {word.strip("`,:;()") for word in layout.split()}
    gone = sorted(n for n in named if n.endswith(".py") and not (ROOT / "rnncli" / n).exists())
    assert not gone, f"README's layout paragraph names modules that do not exist: {gone}"
