"""The patching explorer's web page (Gradio). `circuitlab explore` serves it locally; the
same `build_app()` is a Hugging Face Space's entry point (README: "The patching explorer").

Every number comes from compute.py. Safety: models are loaded once and shared
(`ModelStore`); all model work runs in one Gradio queue (`concurrency_id="model"`, one
at a time, a bounded wait list), so visitors never share a half-finished computation;
`pristine` puts the model back after every request, even one that fails; each visitor's
results live in their own `gr.State`, nothing grows per visitor on the server.
"""

from __future__ import annotations

import html
import shutil
import tempfile
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import gradio as gr

from circuitlab.explore import compute
from circuitlab.explore.compute import (CHAPTERS, DIRECTION_SENTENCES, DIRECTIONS, KIND_TITLES, KINDS, SCALES,
                                        ExplorerError, ModelStore)
from circuitlab.prompts import CORRUPTIONS


@dataclass
class Limits:
    auto_exact_s: float = 20.0  # exact sweeps expected to take longer wait for a click
    time_limit_s: float = 300.0  # exact sweeps expected to take longer are refused
    queue_size: int = 16  # visitors waiting for the model at once




def _message(failed: Exception) -> str:
    if isinstance(failed, ExplorerError):
        return str(failed)
    return (f"The explorer could not finish this request ({type(failed).__name__}: {str(failed)[:300]}). "
            "The model is unchanged and the page still works: try other inputs, or report this with the link below.")


def _chapter_link(panel: str) -> str:
    stem, title = CHAPTERS[panel]
    return (f'<span class="chapter-link">Taught in <a href="/chapters/{stem}.ipynb" target="_blank">{title}</a> '
            f'(or run <code>circuitlab start</code> to get every chapter).</span>')


def _error(message: str) -> str:
    return ('<div class="explorer-error" role="alert" style="color:#9b1c1c;background:#fde8e8;padding:8px 12px;'
            f'border-radius:6px;white-space:pre-wrap;border:1px solid #f5a3a3">{html.escape(message)}</div>')


CELL = "border:1px solid #bbb;padding:2px 6px;font-family:monospace;white-space:pre;text-align:center"
DIFFERS = "background:#ffd54f;font-weight:bold"


def _alignment_html(inputs: compute.Inputs) -> str:
    """Both prompts' tokens, position by position, the positions that differ highlighted."""
    rows = compute.alignment_rows(inputs)

    def cell(tag, text, differs):
        mark = f' class="differs" style="{CELL};{DIFFERS}"' if differs else f' style="{CELL}"'
        return f"<{tag}{mark}>{html.escape(text)}</{tag}>"

    head = "".join(cell("th", str(pos), differs) for pos, _, _, differs in rows)
    clean = "".join(cell("td", repr(tok), differs) for _, tok, _, differs in rows)
    corrupt = "".join(cell("td", repr(tok), differs) for _, _, tok, differs in rows)
    n = len(inputs.differing())
    return (f"<p>{inputs.n_pos} positions in each prompt; {n} differ{'s' if n == 1 else ''} (highlighted).</p>"
            '<div style="overflow-x:auto"><table class="alignment" style="border-collapse:collapse">'
            f'<tr><th style="{CELL}">position</th>{head}</tr><tr><th style="{CELL}">clean</th>{clean}</tr>'
            f'<tr><th style="{CELL}">corrupt</th>{corrupt}</tr></table></div>')


def _predictions_md(preds: dict[str, compute.Prediction], inputs: compute.Inputs) -> str:
    lines = []
    for which, pred in preds.items():
        top = ", ".join(f"`{t!r}` {p:.1%}" for t, p in pred.top)
        ranks = "; ".join(f"`{a!r}` rank {r} ({p:.2%})" for a, (r, p) in pred.answer_ranks.items())
        lines.append(f"**{which.capitalize()} prompt** — top {len(pred.top)}: {top}  \n"
                     f"answers: {ranks}  \nlogit difference logit({inputs.clean_answer!r}) − "
                     f"logit({inputs.corrupt_answer!r}) = **{pred.logit_diff:.4f}**")
    return "\n\n".join(lines)


def _figures(result: compute.Sweeps, tokens, scale, clean, corrupt):
    label = "Attribution estimate" if result.method == "estimate" else "Exact sweep"
    return [compute.heatmap(kind, compute.rescale(result.values[kind], scale, clean, corrupt), tokens,
                            title=f"{label}: {KIND_TITLES[kind]}", scale=scale) for kind in KINDS]


def _share_link(model_key, clean, corrupt, clean_answer, corrupt_answer, direction, scale) -> str:
    query = urllib.parse.urlencode({"model": model_key, "clean": clean, "corrupt": corrupt,
                                    "clean_answer": clean_answer, "corrupt_answer": corrupt_answer,
                                    "direction": direction, "scale": scale})
    return f'<a class="share-link" href="?{html.escape(query)}">Link to these inputs</a>'


DOWNLOADS = Path(tempfile.gettempdir()) / "circuitlab-explore"
KEEP_DOWNLOADS_S = 1800  # Gradio serves its own copy; ours are removed after this long


def _write_downloads(results: list[compute.Sweeps], tokens, scale, clean, corrupt, figures) -> list[str]:
    """The CSV of every number and the figures as one HTML file. Each request's files go in
    a fresh folder (visitors never see each other's); old folders are removed, so the disk
    use stays bounded (Gradio's copies too: delete_cache)."""
    DOWNLOADS.mkdir(exist_ok=True)
    now = time.time()
    for old in DOWNLOADS.iterdir():
        if now - old.stat().st_mtime > KEEP_DOWNLOADS_S:
            shutil.rmtree(old, ignore_errors=True)
    folder = Path(tempfile.mkdtemp(dir=DOWNLOADS))
    table = folder / "patching_results.csv"
    table.write_text(compute.results_csv(results, tokens, scale, clean, corrupt), encoding="utf-8")
    page = folder / "patching_heatmaps.html"
    page.write_text("".join(f.to_html(full_html=False, include_plotlyjs="inline" if i == 0 else False)
                            for i, f in enumerate(figures)), encoding="utf-8")
    return [str(table), str(page)]


def build_app(store: Optional[ModelStore] = None, limits: Optional[Limits] = None) -> gr.Blocks:
    store = store or ModelStore()
    limits = limits or Limits()
    choices = [(c.label, c.key) for c in store.choices.values()]
    default = CORRUPTIONS["surname"]

    with gr.Blocks(title="circuitlab: patching explorer", delete_cache=(600, 1800)) as demo:
        gr.Markdown("# Activation patching explorer\nRun the course's patching methods on your own prompts. "
                    "Pick a model, type a clean prompt and a corrupt twin that differs in a few tokens, and the "
                    "two answers whose logit difference measures the behaviour.")
        with gr.Row():
            model = gr.Dropdown(choices, value=choices[0][1], label="Model", elem_id="model")
            direction = gr.Radio([(v, k) for k, v in DIRECTIONS.items()], value="noising", label="Direction",
                                 elem_id="direction")
            scale = gr.Radio([(v, k) for k, v in SCALES.items()], value="logit", label="Value shown", elem_id="scale")
        direction_note = gr.Markdown(DIRECTION_SENTENCES["noising"], elem_id="direction-note")
        with gr.Row():
            case_buttons = {key: gr.Button(f"Tutorial: {case.label}", size="sm", elem_id=f"case-{key}")
                            for key, case in CORRUPTIONS.items()}
        with gr.Row():
            clean = gr.Textbox(default.clean_prompt, label="Clean prompt", elem_id="clean")
            corrupt = gr.Textbox(default.corrupt_prompt, label="Corrupt prompt", elem_id="corrupt")
        with gr.Row():
            clean_answer = gr.Textbox(default.clean_answer, label="Clean answer (one token, mind the leading space)",
                                      elem_id="clean-answer")
            corrupt_answer = gr.Textbox(default.corrupt_answer, label="Corrupt answer (one token)",
                                        elem_id="corrupt-answer")
        run = gr.Button("Run", variant="primary", elem_id="run")
        message = gr.HTML("", elem_id="message")
        share = gr.HTML("", elem_id="share")

        gr.Markdown("## Tokens and predictions")
        gr.HTML(_chapter_link("predictions"))
        alignment = gr.HTML("", elem_id="alignment")
        preds = gr.Markdown("", elem_id="predictions")

        gr.Markdown("## Patching heatmaps")
        gr.HTML(_chapter_link("estimate") + "<br>" + _chapter_link("resid") + "<br>" + _chapter_link("heads"))
        status = gr.Markdown("", elem_id="status")
        exact_button = gr.Button("Run the exact sweeps", visible=False, elem_id="run-exact")
        plots = {kind: gr.Plot(label=KIND_TITLES[kind], elem_id=f"plot-{kind}") for kind in KINDS}
        downloads = gr.File(label="Downloads: every number (CSV) and the heatmaps (HTML)", file_count="multiple",
                            interactive=False, elem_id="downloads")

        gr.Markdown("## Attention patterns and head roles")
        gr.HTML(_chapter_link("attention"))
        attention = gr.HTML("", elem_id="attention")
        scores = gr.Dataframe(headers=["head", "previous-token", "duplicate-token", "induction"],
                              label="Head-role scores (previous-token and duplicate-token on the clean prompt; "
                                    "induction on random tokens repeated)", elem_id="head-scores")

        state = gr.State(None)  # this visitor's last results, for rescaling without recomputing

        # -- callbacks ----------------------------------------------------------------------
        empty_plots = [None] * len(KINDS)

        def analyse(model_key, clean_p, corrupt_p, good, bad, direction_v, scale_v, progress=gr.Progress()):
            """Everything up to the estimate; the exact sweeps follow (or wait for a click)."""
            link = _share_link(model_key, clean_p, corrupt_p, good, bad, direction_v, scale_v)
            try:
                with compute.pristine(store, model_key) as m:
                    progress(0.1, desc="checking the inputs")
                    inputs = compute.read_inputs(m, clean_p, corrupt_p, good, bad)
                    p = compute.predictions(m, inputs)
                    clean_d, corrupt_d = p["clean"].logit_diff, p["corrupt"].logit_diff
                    progress(0.4, desc="attribution estimate")
                    estimate = compute.estimate_sweeps(m, inputs, direction_v)
                    figures = _figures(estimate, inputs.clean_strs, scale_v, clean_d, corrupt_d)
                    expected = compute.expected_seconds(m, inputs)
                    progress(0.7, desc="attention patterns")
                    attention_html = compute.attention_iframe(m, inputs)
                    head_rows = compute.head_scores(m, inputs)
            except Exception as failed:  # never a stack trace on the page; the model is back as it was
                return (_error(_message(failed)), link, "", "", "", gr.update(visible=False), *empty_plots, None,
                        "", None, None)
            files = _write_downloads([estimate], inputs.clean_strs, scale_v, clean_d, corrupt_d, figures)
            auto = expected <= limits.auto_exact_s
            if expected > limits.time_limit_s:
                note = (f"Showing the attribution estimate. The exact sweeps would take about {expected:.0f} s here, "
                        f"over this server's limit of {limits.time_limit_s:.0f} s: shorten the prompts or pick a "
                        "smaller model for exact numbers.")
                button = gr.update(visible=False)
            elif auto:
                note = f"Showing the attribution estimate; the exact sweeps (about {max(expected, 0.1):.1f} s) follow…"
                button = gr.update(visible=False)
            else:
                note = (f"Showing the attribution estimate. The exact sweeps would take about {expected:.0f} s: "
                        "click below to run them.")
                button = gr.update(visible=True, value=f"Run the exact sweeps (about {expected:.0f} s)")
            saved = {"model": model_key, "inputs": (clean_p, corrupt_p, good, bad), "direction": direction_v,
                     "results": [estimate], "clean": clean_d, "corrupt": corrupt_d, "tokens": inputs.clean_strs,
                     "auto": auto and expected <= limits.time_limit_s, "expected": expected}
            scores_value = head_rows if head_rows is not None else [["(needs the full install: chapter 3's "
                                                                     "answers are not in this distribution)", "", "", ""]]
            return ("", link, _alignment_html(inputs), _predictions_md(p, inputs), note, button, *figures, files,
                    attention_html, scores_value, saved)

        def exact(saved, scale_v, forced, progress=gr.Progress()):
            if not saved or not (saved["auto"] or forced):
                return (gr.update(), gr.update(), *[gr.update()] * len(KINDS), gr.update(), saved)
            if saved["expected"] > limits.time_limit_s:
                return (gr.update(), gr.update(), *[gr.update()] * len(KINDS), gr.update(), saved)
            steps = {kind: i for i, kind in enumerate(KINDS)}
            try:
                with compute.pristine(store, saved["model"]) as m:
                    inputs = compute.read_inputs(m, *saved["inputs"])
                    result = compute.exact_sweeps(
                        m, inputs, saved["direction"],
                        step=lambda kind: progress(steps[kind] / len(KINDS), desc=f"exact sweep: {KIND_TITLES[kind]}"),
                        deadline=time.monotonic() + limits.time_limit_s)
            except Exception as failed:
                return (_error(_message(failed)), gr.update(), *[gr.update()] * len(KINDS), gr.update(), saved)
            figures = _figures(result, saved["tokens"], scale_v, saved["clean"], saved["corrupt"])
            saved = {**saved, "results": [saved["results"][0], result]}
            files = _write_downloads(saved["results"], saved["tokens"], scale_v, saved["clean"], saved["corrupt"],
                                     figures)
            note = (f"Exact sweeps done in {result.seconds:.2f} s (the attribution estimate took "
                    f"{saved['results'][0].seconds:.2f} s). Download both below.")
            return ("", note, *figures, files, saved)

        def rescaled(saved, scale_v):
            if not saved:
                return (*[gr.update()] * len(KINDS), gr.update())
            try:
                latest = saved["results"][-1]
                figures = _figures(latest, saved["tokens"], scale_v, saved["clean"], saved["corrupt"])
                files = _write_downloads(saved["results"], saved["tokens"], scale_v, saved["clean"], saved["corrupt"],
                                         figures)
            except ExplorerError as bad:
                gr.Warning(str(bad))
                return (*[gr.update()] * len(KINDS), gr.update())
            return (*figures, files)

        inputs_ = [model, clean, corrupt, clean_answer, corrupt_answer, direction, scale]
        outputs = [message, share, alignment, preds, status, exact_button, *plots.values(), downloads, attention,
                   scores, state]
        exact_outputs = [message, status, *plots.values(), downloads, state]
        queue = dict(concurrency_id="model", concurrency_limit=1)
        run.click(analyse, inputs_, outputs, **queue).then(
            lambda saved, s: exact(saved, s, False), [state, scale], exact_outputs, **queue)
        exact_button.click(lambda saved, s: exact(saved, s, True), [state, scale], exact_outputs, **queue).then(
            lambda: gr.update(visible=False), None, exact_button, queue=False)
        scale.change(rescaled, [state, scale], [*plots.values(), downloads], **queue)
        direction.change(lambda d: DIRECTION_SENTENCES[d], direction, direction_note, queue=False)
        for key, button in case_buttons.items():
            case = CORRUPTIONS[key]
            button.click(lambda c=case: (c.clean_prompt, c.corrupt_prompt, c.clean_answer, c.corrupt_answer),
                         None, [clean, corrupt, clean_answer, corrupt_answer], queue=False)

        def from_query(request: gr.Request):
            q = dict(request.query_params) if request is not None else {}
            keys = store.choices
            return (q.get("model") if q.get("model") in keys else gr.update(),
                    q.get("clean", gr.update()), q.get("corrupt", gr.update()),
                    q.get("clean_answer", gr.update()), q.get("corrupt_answer", gr.update()),
                    q.get("direction") if q.get("direction") in DIRECTIONS else gr.update(),
                    q.get("scale") if q.get("scale") in SCALES else gr.update())

        demo.load(from_query, None, inputs_, queue=False)
    demo.queue(max_size=limits.queue_size, default_concurrency_limit=1)
    return demo
