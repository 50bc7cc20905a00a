"""Render the evaluation (eval.json's content) as Markdown and as one self-contained HTML page.

Each split (held-out questions, gold questions) gets its own metrics table, with 95% bootstrap
intervals and the tuned - base difference, its per-type and its per-section table: splits are never
pooled. An eval.json from before splits existed renders as one split.

Plots are drawn with matplotlib (Agg, no display) and embedded as base64 PNG data URIs, so the
HTML file can be mailed or archived on its own.
"""
from __future__ import annotations

import base64
import html as html_lib
import re
import io as bytes_io
from typing import Any

from policytune import metrics

# (metric key, label, higher is better)
HEADLINE_METRICS = [
    ("answerable_accuracy", "answerable accuracy", True),
    ("refusal_recall", "refusal recall", True),
    ("exact_refusal_recall", "exact-refusal recall", True),
    ("false_refusal_rate", "false-refusal rate", False),
    ("hallucination_rate", "hallucination rate", False),
    ("exact_match", "exact match", True),
    ("token_f1", "token F1", True),
    ("keyword_accuracy", "keyword accuracy", True),
    ("mean_answer_words", "mean answer words", None),
]


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def _mark(correct: bool | None) -> str:
    return {True: "✓", False: "✗", None: "·"}[correct]


SPLIT_LABELS = {"held_out": "held-out split", "gold": "gold set", "all": "all questions"}


def splits(evaluation: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each split's block {n, metrics, intervals}; an eval.json without splits is one, "all"."""
    if evaluation.get("splits"):
        return evaluation["splits"]
    return {"all": {"n": evaluation["run"]["n_items"], "metrics": evaluation["metrics"], "intervals": None}}


def with_interval(interval: dict[str, Any] | None, signed: bool = False) -> str:
    """"0.42 [0.31, 0.53]" from {estimate, low, high}; "n/a" when there were no items."""
    if not interval or interval.get("estimate") is None:
        return "n/a"
    number = "{:+.2f}" if signed else "{:.2f}"
    return f"{number.format(interval['estimate'])} [{number.format(interval['low'])}, {number.format(interval['high'])}]"


def metric_rows(block: dict[str, Any]) -> list[list[str]]:
    """One split's metrics table: metric, base, tuned, tuned - base (intervals where computed)."""
    base, tuned = block["metrics"]["base"], block["metrics"]["tuned"]
    intervals = block.get("intervals") or {}
    rows = []
    for key, label, _ in HEADLINE_METRICS:
        if key in intervals.get("tuned", {}):
            rows.append([label, with_interval(intervals["base"][key]), with_interval(intervals["tuned"][key]),
                         with_interval(intervals["difference"][key], signed=True)])
        else:
            difference = (f"{tuned[key] - base[key]:+.3f}" if isinstance(base[key], (int, float))
                          and isinstance(tuned[key], (int, float)) else "n/a")
            rows.append([label, _fmt(base[key]), _fmt(tuned[key]), difference])
    return rows


def type_rows(block: dict[str, Any]) -> list[list[str]]:
    """One split's per-question-type table."""
    base, tuned = block["metrics"]["base"], block["metrics"]["tuned"]
    return [[kind, str(row["n"]), _fmt(base["per_type"][kind]["accuracy"]), _fmt(row["accuracy"]),
             _fmt(base["per_type"][kind]["refusal_rate"]), _fmt(row["refusal_rate"])]
            for kind, row in tuned["per_type"].items()]


def section_rows(block: dict[str, Any]) -> list[list[str]]:
    """One split's per-section table (top-level section numbers); empty when no question has a section."""
    base, tuned = block["metrics"]["base"], block["metrics"]["tuned"]
    sections = tuned.get("per_section") or {}
    if set(sections) <= {"unknown"}:
        return []
    return [[name, str(row["n"]), f"{row['n_answerable']}/{row['n_unanswerable']}",
             _fmt(base["per_section"][name]["accuracy"]), _fmt(row["accuracy"]),
             _fmt(base["per_section"][name]["refusal_rate"]), _fmt(row["refusal_rate"])]
            for name, row in sections.items()]


METRIC_HEADER = ["metric", "base", "tuned", "tuned − base"]
TYPE_HEADER = ["type", "n", "base accuracy", "tuned accuracy", "base refusal rate", "tuned refusal rate"]
SECTION_HEADER = ["section", "n", "answerable/unanswerable", "base accuracy", "tuned accuracy",
                  "base refusal rate", "tuned refusal rate"]
NO_SECTIONS = ("No question in this split has a policy section (gold lines carry `section`; held-out questions "
               "take it from their chunk's numbered heading).")
REFUSAL_NOTE = ("Refusals include near-variants (\"not mentioned\", \"does not say\"); the exact string is "
                "counted in exact-refusal recall.")


def interval_note(evaluation: dict[str, Any]) -> str:
    """How the intervals were made, or that there are none (an older eval.json)."""
    boot = evaluation["run"].get("bootstrap")
    if not boot:
        return "No confidence intervals in this evaluation."
    return (f"Intervals: {round(boot['level'] * 100)}% percentile bootstrap over this split's questions "
            f"({boot['resamples']} resamples, seed {boot['seed']}); tuned − base resamples the same questions "
            f"for both models (paired). Other rows have no interval.")


def _md_table(header: list[str], rows: list[list[str]], numeric_from: int = 1) -> list[str]:
    align = ["---" if i < numeric_from else "---:" for i in range(len(header))]
    return ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |",
            *("| " + " | ".join(_md_escape(c) for c in row) + " |" for row in rows)]


def _html_table(header: list[str], rows: list[list[str]], numeric_from: int = 1) -> str:
    e = html_lib.escape
    out = ["<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in header) + "</tr>"]
    out += ["<tr>" + "".join(f"<td class='num'>{e(c)}</td>" if i >= numeric_from else f"<td>{e(c)}</td>"
                             for i, c in enumerate(row)) + "</tr>" for row in rows]
    return "".join(out) + "</table>"


def _split_title(name: str, block: dict[str, Any]) -> str:
    return f"{SPLIT_LABELS.get(name, name).capitalize()} ({block['n']} questions)"


def _counts(evaluation: dict[str, Any]) -> str:
    """"47 questions (held-out split 17, gold set 30)"."""
    parts = [f"{SPLIT_LABELS.get(n, n)} {b['n']}" for n, b in splits(evaluation).items() if n != "all"]
    return f"{evaluation['run']['n_items']} questions" + (f" ({', '.join(parts)})" if parts else "")


def worst_first(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Regressions (base right, tuned wrong) first, then tuned-wrong, then by KL, largest first."""
    return sorted(items, key=lambda r: (not r["regression"], r["tuned_correct"] is not False, -(kl(r) or 0.0)))


def kl(item: dict[str, Any]) -> float | None:
    """An item's mean KL(tuned || base); None when its divergence was not measured (evaluate --divergence-max)."""
    return item["divergence"]["kl"] if item.get("divergence") else None


NOT_MEASURED = "Not measured (--divergence-max -1)."


def _measured(shift: dict[str, Any], evaluation: dict[str, Any]) -> str:
    total = len(evaluation["items"])
    done = shift.get("items", total)
    return f"all {total} questions" if done == total else f"{done} of {total} questions (spread evenly)"


def headline(evaluation: dict[str, Any]) -> str:
    """Three numbers people ask first, base vs tuned with 95% intervals, per split."""
    lines = []
    for name, block in splits(evaluation).items():
        base, tuned = block["metrics"]["base"], block["metrics"]["tuned"]
        intervals = block.get("intervals") or {}
        lines.append(f"{SPLIT_LABELS.get(name, name)}: {base['n']} questions ({base['n_answerable']} answerable, "
                     f"{base['n_unanswerable']} unanswerable): base -> tuned" + (", 95% intervals" if intervals else ""))
        for key, label in (("answerable_accuracy", "answerable accuracy"), ("refusal_recall", "refusal recall"),
                           ("hallucination_rate", "hallucination rate")):
            if intervals:
                lines.append(f"  {label:20s} {with_interval(intervals['base'][key]):>18s} -> "
                             f"{with_interval(intervals['tuned'][key]):18s} difference "
                             f"{with_interval(intervals['difference'][key], signed=True)}")
            else:
                lines.append(f"  {label:20s} {_fmt(base[key]):>6s} -> {_fmt(tuned[key])}")
    return "\n".join(lines)


def _md_escape(text: Any) -> str:
    return _fmt(text).replace("|", "\\|").replace("\n", " ")


def _md_text(text: Any) -> str:
    """A question, id or answer as table-cell text, shown as written: a Markdown viewer rendered a gold question's
    "<b>", "</table>" or "**" (and a tag in an id) instead of showing them."""
    text = _fmt(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return re.sub(r"([\\`*_|])", r"\\\1", text).replace("\n", " ")


def markdown(evaluation: dict[str, Any]) -> str:
    """eval.md: per split metrics with intervals, per-type and per-section tables; divergence; the answers."""
    run, shift = evaluation["run"], evaluation["divergence"]
    out = ["# Evaluation: base vs tuned", "",
           f"Base model `{run['base_model']}`, adapter `{run['adapter']}`; {_counts(evaluation)}, closed-book, "
           f"greedy, at most {run['max_new_tokens']} new tokens. Plots: `eval.html`.", "",
           interval_note(evaluation), REFUSAL_NOTE]
    for name, block in splits(evaluation).items():
        out += ["", f"## {_split_title(name, block)}", "", *_md_table(METRIC_HEADER, metric_rows(block)),
                "", "### Per question type", "", *_md_table(TYPE_HEADER, type_rows(block)),
                "", "### Per section of the policy", ""]
        sections = section_rows(block)
        out += _md_table(SECTION_HEADER, sections) if sections else [NO_SECTIONS]
    probs = shift["refusal_first_token_prob"]
    out += ["", "## Next-token divergence", ""]
    out += [NOT_MEASURED] if not shift.get("items", 1) else [
            f"Teacher-forced on the expected answer (or the tuned answer when none is given), on {_measured(shift, evaluation)}, "
            f"over {shift['positions']} answer positions:",
            "", f"- mean KL(tuned ‖ base): {_fmt(shift['mean_kl_tuned_base'])} nats per token (max item {_fmt(shift['max_kl_tuned_base'])})",
            f"- top-1 agreement: {_fmt(shift['mean_top1_agreement'])}",
            f"- P(first refusal token) base: answerable {_fmt(probs['base']['answerable'])}, unanswerable {_fmt(probs['base']['unanswerable'])}",
            f"- P(first refusal token) tuned: answerable {_fmt(probs['tuned']['answerable'])}, unanswerable {_fmt(probs['tuned']['unanswerable'])}",
            f"- {separability_note(shift)}"]
    out += ["", "## Answers, worst regressions first", "",
            "| id | split | section | question | answerable | expected | base | ok | tuned | ok | KL |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | ---: |"]
    for r in worst_first(evaluation["items"]):
        out.append(" | ".join(["", _md_text(r["id"]), _md_escape(r.get("split", "")), _md_text(r.get("section") or ""),
                               _md_text(r["question"]), _md_escape(r["answerable"]),
                               _md_text(r["expected_answer"]), _md_text(r["base_answer"]), _mark(r["base_correct"]),
                               _md_text(r["tuned_answer"]), _mark(r["tuned_correct"]),
                               "" if kl(r) is None else f"{kl(r):.3f}", ""]).strip())
    return "\n".join(out) + "\n"


def separability_note(shift: dict[str, Any]) -> str:
    """The refusal-start probability's separability (metrics.separability), or why it is not given."""
    auc = shift.get("refusal_separability") or {}
    if auc.get("tuned") is None:
        return "separability of near misses from answerable questions: not measured (needs both kinds)"
    return (f"separability of near misses from answerable questions by that probability (ROC AUC, 0.5 = chance): "
            f"base {_fmt(auc.get('base'))}, tuned {_fmt(auc.get('tuned'))}")


# ---------------------------------------------------------------- plots

def _png(figure) -> str:
    import matplotlib.pyplot as plt

    buffer = bytes_io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(figure)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def plot_metrics(evaluation: dict[str, Any]) -> str:
    """Grouped bars: each rate metric, base vs tuned, of the split in `metrics`, with 95% intervals where computed."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [(k, label) for k, label, better in HEADLINE_METRICS if better is not None]
    split = evaluation["run"].get("metrics_split", "all")
    intervals = splits(evaluation).get(split, {}).get("intervals") or {}
    figure, axes = plt.subplots(figsize=(10, 4))
    for offset, name, colour in ((-0.2, "base", "#8c9cb0"), (0.2, "tuned", "#2a7ab9")):
        values = [evaluation["metrics"][name][k] for k, _ in keys]
        bounds = [intervals.get(name, {}).get(k) for k, _ in keys]
        # Error bars from the bootstrap interval; none (zero length) where it was not computed.
        errors = [[(v - b["low"]) if b and v is not None else 0 for v, b in zip(values, bounds)],
                  [(b["high"] - v) if b and v is not None else 0 for v, b in zip(values, bounds)]]
        bars = axes.bar([i + offset for i in range(len(keys))], [v or 0 for v in values], 0.4, label=name, color=colour,
                        yerr=errors if intervals else None, capsize=3, ecolor="#444444")
        for bar, value in zip(bars, values):
            axes.annotate("n/a" if value is None else f"{value:.2f}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                          ha="center", va="bottom", fontsize=8)
    axes.set_xticks(range(len(keys)), [label for _, label in keys], rotation=20, ha="right")
    axes.set_ylim(0, 1.1)
    axes.set_title(f"Metrics on the {SPLIT_LABELS.get(split, split)}, base vs tuned (lower is better for false "
                   "refusal and hallucination)" + ("; bars: 95% intervals" if intervals else ""))
    axes.legend()
    return _png(figure)


def plot_refusal_probability(evaluation: dict[str, Any]) -> str:
    """Probability of starting the refusal, per model, answerable vs unanswerable questions."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    items = evaluation["items"]
    groups = []  # (label, probabilities, colour); empty groups are left out
    for name, colour in (("base", "#8c9cb0"), ("tuned", "#2a7ab9")):
        for group, flag in (("answerable", True), ("unanswerable", False), ("unlabelled", None)):
            values = metrics.refusal_start_probs(items, name, flag)
            if values:
                groups.append((f"{name}\n{group}", values, colour))
    figure, axes = plt.subplots(figsize=(8, 4))
    positions = list(range(1, len(groups) + 1))
    axes.boxplot([values for _, values, _ in groups], positions=positions, widths=0.5, showfliers=False)
    for position, (_, values, colour) in zip(positions, groups):
        jitter = [position + ((k * 37) % 21 - 10) / 60 for k in range(len(values))]  # deterministic spread
        axes.scatter(jitter, values, s=14, alpha=0.7, color=colour)
    axes.set_xticks(positions, [label for label, _, _ in groups])
    axes.set_xlim(0.4, len(groups) + 0.6)
    axes.set_ylim(-0.03, 1.03)
    axes.set_ylabel("P(first refusal token)")
    axes.set_title("Probability of starting the refusal at the first answer position")
    return _png(figure)


def plot_kl(evaluation: dict[str, Any]) -> str:
    """Mean KL(tuned || base) per item, largest first, coloured by answerability."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    items = sorted((r for r in evaluation["items"] if kl(r) is not None), key=lambda r: -kl(r))
    colours = {True: "#2a7ab9", False: "#d9822b", None: "#999999"}
    figure, axes = plt.subplots(figsize=(10, 4))
    axes.bar(range(len(items)), [kl(r) for r in items], color=[colours[r["answerable"]] for r in items])
    if len(items) <= 40:
        axes.set_xticks(range(len(items)), [str(r["id"])[:10] for r in items], rotation=60, ha="right", fontsize=7)
    else:
        axes.set_xticks([])
    from matplotlib.patches import Patch
    axes.legend(handles=[Patch(color=colours[True], label="answerable"), Patch(color=colours[False], label="unanswerable"),
                         Patch(color=colours[None], label="unlabelled")])
    axes.set_ylabel("mean KL per answer token (nats)")
    axes.set_title("How far the adapter moved each item's next-token distributions")
    return _png(figure)


# ---------------------------------------------------------------- html

CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; padding: 0 1em; max-width: 1200px; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 4px 8px; vertical-align: top; text-align: left; }
th { background: #f0f3f6; }
td.num { text-align: right; }
tr.regression { background: #fde8e8; }
.ok { color: #1a7f37; font-weight: bold; } .bad { color: #cf222e; font-weight: bold; }
img { max-width: 100%; display: block; margin: 1em 0; }
"""


def _img(png_base64: str, alt: str) -> str:
    return f'<img src="data:image/png;base64,{png_base64}" alt="{html_lib.escape(alt)}">'


def html(evaluation: dict[str, Any]) -> str:
    """eval.html: the same content as eval.md plus three embedded plots."""
    e = html_lib.escape
    run, shift = evaluation["run"], evaluation["divergence"]
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>Evaluation: base vs tuned</title>"
             f"<style>{CSS}</style></head><body>",
             "<h1>Evaluation: base vs tuned</h1>",
             f"<p>Base model <code>{e(run['base_model'])}</code>, adapter <code>{e(run['adapter'])}</code>; "
             f"{e(_counts(evaluation))}, closed-book, greedy, at most {run['max_new_tokens']} new tokens.</p>",
             f"<p>{e(interval_note(evaluation))} {e(REFUSAL_NOTE)}</p>"]
    for name, block in splits(evaluation).items():
        sections = section_rows(block)
        parts += [f"<h2>{e(_split_title(name, block))}</h2>", _html_table(METRIC_HEADER, metric_rows(block)),
                  "<h3>Per question type</h3>", _html_table(TYPE_HEADER, type_rows(block)),
                  "<h3>Per section of the policy</h3>",
                  _html_table(SECTION_HEADER, sections) if sections else f"<p>{e(NO_SECTIONS)}</p>"]
    parts.append(_img(plot_metrics(evaluation), "metrics, base vs tuned"))
    parts.append("<h2>Next-token divergence</h2>")
    if not shift.get("items", 1):
        parts.append(f"<p>{e(NOT_MEASURED)}</p>")
    else:
        probs = shift["refusal_first_token_prob"]
        parts.append(f"<p>Teacher-forced on the expected answer (or the tuned answer when none is given), on "
                     f"{e(_measured(shift, evaluation))}, over "
                     f"{shift['positions']} answer positions: mean KL(tuned ‖ base) <b>{_fmt(shift['mean_kl_tuned_base'])}</b> "
                     f"nats per token, top-1 agreement <b>{_fmt(shift['mean_top1_agreement'])}</b>. Mean probability of "
                     f"the refusal's first token: base {_fmt(probs['base']['answerable'])} (answerable) / "
                     f"{_fmt(probs['base']['unanswerable'])} (unanswerable), tuned {_fmt(probs['tuned']['answerable'])} / "
                     f"{_fmt(probs['tuned']['unanswerable'])}. {e(separability_note(shift))}</p>")
        parts.append(_img(plot_refusal_probability(evaluation), "refusal probability distributions"))
        parts.append(_img(plot_kl(evaluation), "KL per item"))
    parts.append("<h2>Answers, worst regressions first</h2><table><tr><th>id</th><th>split</th><th>section</th>"
                 "<th>question</th><th>answerable</th>"
                 "<th>expected</th><th>base</th><th></th><th>tuned</th><th></th><th>KL</th></tr>")
    for r in worst_first(evaluation["items"]):
        def cell(correct: bool | None) -> str:
            return f"<td class='{ {True: 'ok', False: 'bad', None: ''}[correct] }'>{_mark(correct)}</td>"
        parts.append(f"<tr class='{'regression' if r['regression'] else ''}'><td>{e(str(r['id']))}</td>"
                     f"<td>{e(r.get('split', ''))}</td><td>{e(r.get('section') or '')}</td><td>{e(r['question'])}</td><td>{_fmt(r['answerable'])}</td><td>{e(_fmt(r['expected_answer']))}</td>"
                     f"<td>{e(r['base_answer'])}</td>{cell(r['base_correct'])}<td>{e(r['tuned_answer'])}</td>"
                     f"{cell(r['tuned_correct'])}<td class='num'>{'' if kl(r) is None else f'{kl(r):.3f}'}</td></tr>")
    parts.append("</table></body></html>")
    return "\n".join(parts) + "\n"
