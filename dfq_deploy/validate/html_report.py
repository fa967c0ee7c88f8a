"""A self-contained HTML page for a validation report: tables plus figures embedded as base64 PNG (no network,
no external files), readable offline and attachable to a CI run."""

from __future__ import annotations

import base64
import html
import io

from .verdict import portability_text, runtime_thresholds, status, thresholds, verdict_word


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _figures(report: dict, history_png: bytes | None) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    figs = []
    rows = report["runtimes"]
    if report["labelled"]:
        names = [report["reference"]] + list(rows)
        accs = [report["reference_accuracy"]] + [r["accuracy"] for r in rows.values()]
        fig, ax = plt.subplots(figsize=(6, 3))
        bars = ax.bar(range(len(names)), accs, color=[f"C{i}" for i in range(len(names))])
        ax.bar_label(bars, fmt="%.2f %%")
        ax.set_xticks(range(len(names)), names, fontsize=8)
        ax.set_ylim(max(0.0, min(accs) - 5), 100)
        ax.set_ylabel("top-1 accuracy (%)")
        ax.set_title(f"accuracy per runtime ({report['data']})")
        figs.append(("Accuracy per runtime", _png(fig)))
    hists = {n: r["step_histogram"] for n, r in rows.items() if r.get("step_histogram")}
    if hists:
        fig, ax = plt.subplots(figsize=(6, 3))
        width = 0.8 / len(hists)
        for i, (name, h) in enumerate(hists.items()):
            ks = np.array([int(k) for k in h])
            ax.bar(ks + i * width, [h[str(k)] for k in ks], width=width, label=name)
        ax.set_yscale("log")
        ax.set_xlabel("|logit difference| to the reference (output quantization steps, rounded)")
        ax.set_ylabel("logits")
        if report["gate"].get("max_logit_steps") is not None:
            ax.axvline(report["gate"]["max_logit_steps"] + 0.5, color="r", linestyle="--", label="gate")
        ax.legend(fontsize=8)
        ax.set_title("logit differences (reported; ties compound with depth)")
        figs.append(("Logit-difference histogram", _png(fig)))
    for name, r in rows.items():
        if r.get("confusion"):
            cm = np.array(r["confusion"])
            fig, ax = plt.subplots(figsize=(5.5, 4.5))
            im = ax.imshow(cm, cmap="Blues")
            labels = report["class_names"][:len(cm)] or [str(i) for i in range(len(cm))]
            ax.set_xticks(range(len(cm)), labels, rotation=60, ha="right", fontsize=7)
            ax.set_yticks(range(len(cm)), labels, fontsize=7)
            ax.set_xlabel("predicted")
            ax.set_ylabel("true")
            fig.colorbar(im)
            ax.set_title(f"confusion matrix: {name}")
            figs.append((f"Confusion matrix ({name})", _png(fig)))
            break  # one is enough to read; the per-class table covers every runtime
    if history_png:
        figs.append(("Training: losses and teacher weights", base64.b64encode(history_png).decode()))
    return figs


def _table(header: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _fmt(v, spec=".2f", unit=""):
    return "n/a" if v is None else f"{v:{spec}}{unit}"


def render_html(report: dict, history_png: bytes | None = None) -> str:
    """The page for ``report`` (from :func:`dfq_deploy.validate.validate.validate`); ``history_png``: the training
    history figure of the run (:func:`dfq_deploy.figures.history_png`), shown among the figures."""
    verdict = verdict_word(report["passed"])
    parts = _heading(report) + _runtime_table(report) + _census(report) + _where_proven(report) + _layers(report)
    figs = _figures(report, history_png)
    parts.append("<h2>Figures</h2>")
    parts += [f"<figure><img alt='{html.escape(t)}' src='data:image/png;base64,{b}'><figcaption>{html.escape(t)}"
              "</figcaption></figure>" for t, b in figs]
    per_class = {n: r["per_class_accuracy"] for n, r in report["runtimes"].items() if r.get("per_class_accuracy")}
    if per_class:
        classes = list(next(iter(per_class.values())))
        parts.append("<h2>Per-class accuracy (%)</h2>" + _table(
            ["class", *per_class], [[c, *(f"{per_class[n][c]:.2f}" for n in per_class)] for c in classes]))
    style = ("body{font-family:sans-serif;max-width:1000px;margin:2em auto;color:#222}table{border-collapse:collapse;"
             "margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}th{background:#f3f3f3}"
             ".pass{color:#080}.fail{color:#c00}figure{display:inline-block;margin:1em}img{max-width:100%}")
    # the script only records how many figures decoded (tests read it from a headless browser)
    script = ("window.addEventListener('load',()=>{document.body.dataset.figuresLoaded="
              "[...document.images].filter(i=>i.complete&&i.naturalWidth>0).length;});")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>dfq-deploy validation {verdict}</title>"
            f"<style>{style}</style></head><body data-figures='{len(figs)}'>{''.join(parts)}"
            f"<script>{script}</script></body></html>\n")


def _heading(report: dict) -> list[str]:
    """The verdict, what was compared, the gate's thresholds and why it fails."""
    verdict = verdict_word(report["passed"])
    parts = [f"<h1>dfq-deploy validation: <span class='{verdict.lower()}'>{verdict}</span></h1>",
             f"<p>model <code>{html.escape(report['model'])}</code> (profile {html.escape(str(report['profile']))})"
             f", data {html.escape(report['data'])} ({report['samples']} images), reference "
             f"{html.escape(report['reference'])}, output step {_fmt(report['output_step'], '.4g')}.</p>",
             f"<p>Gate: {html.escape(thresholds(report['gate']))}; with the onnxruntime profile every Conv/Gemm an "
             "integer kernel. Per layer, every quantized activation is computed by the runtime from the reference's "
             "own inputs, must lie inside its quantizer's integer range, and counts as off only on another code that "
             "no rounding tie explains.</p>"]
    if report.get("failures"):
        parts.append("<h2>Why it fails</h2><ul>" + "".join(f"<li>{html.escape(f)}</li>" for f in report["failures"])
                     + "</ul>")
    return parts


def _runtime_table(report: dict) -> list[str]:
    """One row per runtime (the reference first), and the runtimes not run here."""
    rows = [[report["reference"], _fmt(report["reference_accuracy"], unit=" %"), "reference", "-", "-", "-"]]
    for name, r in report["runtimes"].items():
        rows.append([name, _fmt(r["accuracy"], unit=" %"),
                     _fmt(r["top1_agreement"], ".3f", " %") + f" ({runtime_thresholds(r)})",
                     _fmt(r["max_diff_steps"], "g"), _fmt(r["mean_diff_steps"], ".4f"), status(r["passed"])])
    parts = [_table(["runtime", "accuracy", "top-1 agreement", "max diff (steps)", "mean diff (steps)", "gate"],
                    rows)]
    if report["skipped"]:
        parts.append("<h2>Not run here</h2>" + _table(["runtime", "why"], [[k, v] for k, v in
                                                                           report["skipped"].items()]))
    return parts


def _census(report: dict) -> list[str]:
    census = report.get("census")
    if census is None:
        return []
    return [f"<h2>Integer census</h2><p>{census['integer_compute']} Conv/Gemm run as integer kernels in ONNX "
            f"Runtime, {len(census['float_compute'])} in float"
            + (f": {html.escape(', '.join(census['float_compute']))}" if census["float_compute"] else "") + ".</p>"]


def _where_proven(report: dict) -> list[str]:
    """The CPU the runtimes ran on, and whether the model computes the same integers on every CPU."""
    if report.get("pair_sums") is None and not report.get("cpu"):
        return []
    from ..isa import describe

    parts = ["<h2>Where parity was proven</h2><p>"
             + (f"Checked on {html.escape(describe(report['cpu']))}.<br>" if report.get("cpu") else "")
             + (f"Portability: {html.escape(portability_text(report['pair_sums'], report.get('portable')))}."
                if report.get("pair_sums") is not None else "") + "</p>"]
    pairs = [d for d in (report.get("pair_sums") or {}).get("layers", []) if not d["exact_without_vnni"]]
    if pairs:
        parts.append(_table(["integer layer", "input codes", "weight codes", "worst 16-bit pair sum"],
                            [[d["node"], d["input_codes"], d["weight_codes"], d["worst_pair_sum"]] for d in pairs]))
    return parts


def _layers(report: dict) -> list[str]:
    """The layer-local check: the first faulty activation (or the worst), then one row per activation."""
    layers = report.get("layers")
    if not layers:
        return []
    first = layers["first_failure"]
    where = (f"first faulty activation: <b>{html.escape(first['node'])}</b> ({html.escape(first['module'])}), "
             f"{first['max_steps']:g} steps, {first.get('unexplained', 0.0):.3%} of its elements on another code "
             f"without a tie" if first else
             f"every activation within the gate (worst {layers['worst_steps']:g} step, "
             f"{layers['worst_mismatch']:.4%} of elements)")
    return ["<h2>Layer-local check</h2>",
            f"<p>{where}; {layers['samples']} images, reference {html.escape(layers['reference'])}, runtime "
            f"{html.escape(layers['runtime'])}.</p>",
            _table(["#", "graph node", "module", "shape", "max steps", "share on another code", "of which no tie",
                    "integer range (graph / quantizer)", "gate"],
                   [[d["index"], d["node"], d["module"], d["shape"], f"{d['max_steps']:g}", f"{d['mismatched']:.4%}",
                     f"{d.get('unexplained', 0.0):.4%}", f"{d.get('code_range')} / {d.get('expected_range') or '-'}",
                     "pass" if d["passed"] else f"FAIL ({d['cause']})" if d.get("cause") else "FAIL"]
                    for d in layers["layers"]])]
