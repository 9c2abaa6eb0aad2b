"""The HTML page of ``rnncli report``: one self-contained file (the plots inside it as
data URIs, no script, nothing fetched), every text from the data or the model escaped."""

from __future__ import annotations

import base64
import datetime as _dt
import html

from rnncli.inference.evaluation import Scored
from rnncli.inference.predict import SCORE_DIGITS
from rnncli.modeldir import artifacts
from rnncli.render.highlight import shown_spans, token_noun

CAPTIONS = {
    "roc": "ROC curve: true against false positive rate as the threshold moves.",
    "pr": "Precision against recall as the threshold moves.",
    "reliability": "Calibration: in each bin of the predicted label's probability, how "
                   "often that label is right (on the diagonal when the scores can be "
                   "taken at their word); below, how many texts fall in each bin.",
    "confusion": "Rows: the true label; columns: the predicted one.",
    "scores": "How the scores spread for each true label.",
    "learning": "The recurrent network's training history; the dotted line marks the "
                "epoch whose weights were kept.",
}


def render_page(scored: Scored, figures: dict, pngs: dict[str, bytes], wrong: list[dict],
                explained: list | None, *, listed: int, source: str, model_dir: str,
                stand_ins: list[tuple[str, str]] = ()) -> str:
    """One self-contained HTML page: the plots are inside it, as data URIs. ``listed``:
    how many wrong texts were asked for; ``stand_ins``: (name in the plots, class name)
    where the plots could not draw the class names (fonts.py)."""
    e = html.escape
    manifest = scored.manifest
    created = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    plots = "".join(
        f'<figure class="{name}"><img alt="{name}" src="data:image/png;base64,'
        f'{base64.b64encode(png).decode()}"><figcaption>{e(CAPTIONS[name])}</figcaption>'
        f"</figure>" for name, png in pngs.items())
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>rnncli report: {e(model_dir)}</title>
<style>{_CSS}</style></head>
<body><main>
<h1>rnncli report</h1>
<p class="meta">Model <code>{e(model_dir)}</code> on {e(source)}: {figures.get('n')} texts.
Written {e(created)} by rnncli {e(str(manifest.get('rnncli_version', '')))}.</p>
<h2>Figures</h2>
{_figures_table(figures)}
{_per_class_table(figures)}
<h2>Plots</h2>
{_stand_ins_table(stand_ins)}
<div class="plots">{plots}</div>
<h2>Most confidently wrong texts</h2>
<p>The texts the model got wrong with the highest probability: often label errors worth
fixing in the data. {_nouns(explained).capitalize()} are shaded by their contribution to
the predicted label (<span class="for3">towards it</span>,
<span class="against3">against it</span>; darker: stronger), as <code>rnncli explain</code>
shows them.</p>
{_errors_table(wrong, explained, listed)}
<h2>Model</h2>
{_settings_table(manifest)}
</main></body></html>
"""


def _stand_ins_table(stand_ins: list[tuple[str, str]]) -> str:
    """Which class each name in the plots stands for (no font here drew the real ones)."""
    if not stand_ins:
        return ""
    rows = "".join(f"<tr><td>{html.escape(drawn)}</td><td>{html.escape(name)}</td></tr>"
                   for drawn, name in stand_ins)
    return ("<p>No font on the machine that wrote this report has the characters of the "
            "class names, so the plots name the classes this way:</p>"
            f"<table class='stand-ins'><tr><th>in the plots</th><th>class</th></tr>{rows}"
            "</table>")


def _nouns(explained: list | None) -> str:
    """"words", or "characters" for texts mostly of Chinese or Japanese characters."""
    return token_noun([t for record in explained or [] for t in record["tokens"]])[1]


def _fmt(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4f}" if value == 0 or abs(value) >= 1e-3 else f"{value:.3g}"
    return html.escape(str(value))


def _figures_table(figures: dict) -> str:
    keys = [k for k, v in figures.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)]
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{_fmt(figures[k])}</td></tr>"
                   for k in keys)
    return f'<table class="figures">{rows}</table>'


def _per_class_table(figures: dict) -> str:
    rows = "".join(f"<tr><td>{html.escape(str(c['class']))}</td><td>{_fmt(c['precision'])}</td>"
                   f"<td>{_fmt(c['recall'])}</td><td>{_fmt(c['f1'])}</td>"
                   f"<td>{c['support']}</td></tr>" for c in figures.get("per_class", []))
    return ("<table><tr><th>class</th><th>precision</th><th>recall</th><th>F1</th>"
            f"<th>support</th></tr>{rows}</table>")


def _errors_table(wrong: list[dict], explained: list | None, listed: int) -> str:
    if not listed:
        return "<p>Not listed (<code>--errors 0</code>).</p>"
    if not wrong:
        return "<p>None: every text was labelled right.</p>"
    rows = []
    for i, error in enumerate(wrong):
        record = explained[i] if explained else None
        text = _shaded(record) if record else html.escape(error["text"])
        rows.append(f"<tr><td class='text'>{text}</td><td>{html.escape(error['label'])}</td>"
                    f"<td>{html.escape(error['predicted'])}</td>"
                    f"<td>{error['score']:.{SCORE_DIGITS}f}</td></tr>")
    return ("<table class='errors'><tr><th>text</th><th>true label</th><th>predicted</th>"
            f"<th>probability</th></tr>{''.join(rows)}</table>")


def _shaded(record: dict) -> str:
    """The text with its words in spans shaded by contribution (as the terminal shows)."""
    text = record["text"][: record["read_chars"]]
    out, at = [], 0
    for start, end, strength in shown_spans(record["tokens"]):
        out.append(html.escape(text[at:start]))
        level = min(int(abs(strength) * 3), 2) + 1
        kind = "for" if strength > 0 else "against"
        out.append(f'<span class="{kind}{level}">{html.escape(text[start:end])}</span>')
        at = end
    out.append(html.escape(text[at:]))
    return "".join(out) + (" …" if record["read_chars"] < len(record["text"]) else "")


def _settings_table(manifest: dict) -> str:
    settings = dict(manifest.get("settings") or {})
    settings["tokenizer"] = artifacts.describe_tokens(manifest)  # as rnncli info says it
    blend = manifest.get("blend") or {}
    if blend:
        settings["blend: weight of the recurrent network"] = blend.get("rnn_weight")
    settings["calibration: temperature"] = artifacts.temperature(manifest)
    settings["labels"] = ", ".join(artifacts.label_names(manifest))
    rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{_fmt(v)}</td></tr>"
                   for k, v in settings.items())
    return f"<table class='settings'>{rows}</table>"


_CSS = """
body{font:15px/1.5 system-ui,-apple-system,"Segoe UI",sans-serif;color:#222;margin:0;
background:#fafafa}
main{max-width:1100px;margin:0 auto;padding:1.5em}
h1{margin-bottom:0}.meta{color:#555}
table{border-collapse:collapse;margin:0.8em 0;background:#fff}
th,td{border:1px solid #ddd;padding:0.3em 0.7em;text-align:left;vertical-align:top}
table.figures td,table.settings td{font-variant-numeric:tabular-nums}
td.text{max-width:640px}
.plots{display:flex;flex-wrap:wrap;gap:1em}
figure{margin:0;background:#fff;border:1px solid #ddd;padding:0.5em;max-width:520px}
figure img{max-width:100%}figure.learning,figure.scores{max-width:1060px}
figcaption{font-size:13px;color:#555}
.for1{background:#d7ffd7}.for2{background:#87d787}.for3{background:#00af00;color:#fff}
.against1{background:#ffd7d7}.against2{background:#ff8787}
.against3{background:#d70000;color:#fff}
"""
