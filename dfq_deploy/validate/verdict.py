"""The gate's verdict in words: which thresholds applied, which failed, and the float64 rounding bound where it applied.

Every output that states the verdict renders it here, from the plain data of a report: ``summary.txt`` of a
``train-export`` run, the :class:`~dfq_deploy.errors.ParityError` message, ``validation.html`` and the summary
``dfq-deploy validate`` prints. The reasons a runtime fails are the gate's own lines (``GateResult.failures``).
"""

from __future__ import annotations

from pathlib import Path


def verdict_word(passed: bool) -> str:
    """``PASS`` or ``FAIL``: the headline of a report."""
    return "PASS" if passed else "FAIL"


def status(passed: bool, failures: list[str] = ()) -> str:
    """``pass``, or ``FAIL`` followed by every reason the gate gave."""
    if passed:
        return "pass"
    return "FAIL: " + "; ".join(failures) if failures else "FAIL"


def layer_thresholds(gate: dict) -> str:
    """The layer-local thresholds: the largest difference of one element, the share no rounding tie explains."""
    return f"<= {gate['layer_max_steps']:g} step and <= {gate['layer_max_mismatch']:.3%} of elements"


def end_to_end_thresholds(gate: dict) -> str:
    """The end-to-end thresholds the gate was configured with (a runtime's own row may be widened by rounding)."""
    return (f"top-1 agreement >= {gate['min_agreement']} %, accuracy within {gate['max_accuracy_diff']} pt"
            + (f", logits within {gate['max_logit_steps']:g} output steps"
               if gate.get("max_logit_steps") is not None else ""))


def thresholds(gate: dict) -> str:
    """Every threshold of the gate in one line."""
    return f"per layer {layer_thresholds(gate)}; {end_to_end_thresholds(gate)}"


def runtime_thresholds(row: dict) -> str:
    """The end-to-end thresholds one runtime (a ``ParityResult.to_dict()``) was held to: the gate's, or where the
    reference's own top-1 moves with rounding, those widened to its float64 agreement, which is then named."""
    text = f"gate >= {row['min_agreement']} %"
    if row.get("accuracy") is not None:
        text += f", accuracy within {row['max_accuracy_diff']} pt"
    if row.get("rounding_baseline") is not None:
        source = row.get("rounding_source") or "its own float64 evaluation"
        text += f"; rounding-bound inputs: the reference agrees with {source} on {row['rounding_baseline']:.3f} %"
    return text


def portability_text(pair_sums: dict | None, portable: bool | None) -> str:
    """One line on whether the model computes the same integers on every CPU (its static pair-sum bound)."""
    if pair_sums is None:
        return "not checked"
    if pair_sums["exact_without_vnni"]:
        u8 = pair_sums.get("uint8_weights", 0)
        return (f"same integers on every CPU: worst 16-bit pair sum {pair_sums['worst_pair_sum']} <= "
                f"{pair_sums['limit']} in {pair_sums['checked'] - u8} int8-weight Conv/Gemm"
                + (f", {u8} with uint8 weights (u8 x u8 kernels)" if u8 else ""))
    names = pair_sums["saturating"]
    how = ("exported as portable: FAILS" if portable else
           "exported with --vnni-only" if portable is False else "no portable claim in its metadata")
    return (f"exact only on CPUs with VNNI / AMX, ARM and GPUs: {len(names)} layer(s) can saturate a 16-bit pair sum "
            f"on x86 without VNNI (worst {pair_sums['worst_pair_sum']}; {how})")


def failure_message(report: dict, html_path: Path) -> str:
    """The message of the ``ParityError`` a failed validation report raises."""
    return (f"parity gate failed: {'; '.join(report['failures'])} (gate: {thresholds(report['gate'])}); "
            f"report: {html_path}")
