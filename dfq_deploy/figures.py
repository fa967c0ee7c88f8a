"""Figures a person reads: the training history of a run (``losses.png``, also embedded in ``validation.html``)."""

from __future__ import annotations

from pathlib import Path


def plot_history(history: list[dict], path: Path) -> None:
    """Write :func:`history_png` of ``history`` to ``path``."""
    Path(path).write_bytes(history_png(history))


def history_png(history: list[dict]) -> bytes:
    """The training history as one PNG figure: synthesis losses; the student's KD loss or, without KD, each block's
    reconstruction error; and (multi-teacher recipes) the teacher weights over training."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kd = [h for h in history if h.get("phase") == "kd"]
    synth = [h for h in history if h.get("phase") in ("warmup", "inversion")]
    weight_keys = sorted({k for h in kd for k in h if k.startswith("w_")})
    fig, axes = plt.subplots(1, 3 if weight_keys else 2, figsize=(15 if weight_keys else 10, 3.5))
    n_synth = (synth[-1]["step"] + 1) if synth else 0
    gen_rows = synth + [h for h in kd if "gen_bns" in h]  # generator recipes keep training the generator
    xs = [h["step"] for h in synth] + [n_synth + h["step"] for h in kd if "gen_bns" in h]
    for key, label in (("gen_loss", "generator loss"), ("gen_ce", "cross-entropy"), ("gen_bns", "BN statistics")):
        pts = [(x, h[key]) for x, h in zip(xs, gen_rows, strict=True) if key in h and h[key] == h[key] and h[key] > 0]
        if pts:
            axes[0].plot(*zip(*pts, strict=True), label=label)
    if gen_rows:
        axes[0].set_yscale("log")
        axes[0].legend()
    axes[0].set_xlabel("synthesis step")
    axes[0].set_title("image synthesis losses")
    rec = [h for h in history if h.get("phase") == "reconstruction"]
    if kd:
        axes[1].plot([h["step"] for h in kd], [h["kd"] for h in kd], color="C2")
        axes[1].set_xlabel("student step")
        axes[1].set_title("student KD loss (float teacher)")
    elif rec:  # a reconstruction-only recipe (ptq): each block's error against the float network
        xs = range(len(rec))
        axes[1].bar([x - 0.2 for x in xs], [h["rec_before"] for h in rec], width=0.4, label="before")
        axes[1].bar([x + 0.2 for x in xs], [h["rec_after"] for h in rec], width=0.4, label="after")
        axes[1].set_xticks(list(xs), [h["block"] for h in rec], rotation=60, ha="right", fontsize=7)
        axes[1].set_yscale("log")
        axes[1].legend()
        axes[1].set_title("block reconstruction: output error vs float")
    else:
        axes[1].set_title("student KD loss (float teacher)")
    if weight_keys:
        for k in weight_keys:
            axes[2].plot([h["step"] for h in kd], [h[k] for h in kd], label=k[2:])
        axes[2].set_xlabel("student step")
        axes[2].set_title("teacher loss weights (balancer)")
        axes[2].legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()
