"""The gate's verdict is worded once: every output that states it (run summary, failure message, HTML page,
``validate``'s summary) shows the same thresholds and the float64 rounding bound where it applied."""

import html
from pathlib import Path

from dfq_deploy.validate.gate import Gate
from dfq_deploy.validate.verdict import (failure_message, layer_thresholds, runtime_thresholds, status, thresholds,
                                         verdict_word)

GATE = Gate().to_dict()


def _row(**kw):
    row = {"runtime": "onnxruntime", "accuracy": 90.0, "reference_accuracy": 90.5, "top1_agreement": 97.0,
           "min_agreement": GATE["min_agreement"], "max_accuracy_diff": GATE["max_accuracy_diff"],
           "max_abs_diff": 0.5, "max_diff_steps": 3.0, "mean_diff_steps": 0.1, "passed": False,
           "rounding_baseline": None}
    return {**row, **kw}


def _report(row, failures=("onnxruntime: top-1 agreement 97.000 % < 98.0 %",)):
    return {"model": "m.onnx", "profile": "onnxruntime", "data": "synthetic", "samples": 10, "labelled": True,
            "reference": "torch", "reference_accuracy": 90.5, "output_step": 0.1, "gate": GATE,
            "runtimes": {"onnxruntime": row}, "skipped": {}, "census": None, "pair_sums": None, "cpu": {},
            "layers": None, "failures": list(failures), "passed": not failures}


def test_the_words_say_which_thresholds_applied():
    assert verdict_word(True) == "PASS" and verdict_word(False) == "FAIL"
    assert status(True) == "pass" and status(False) == "FAIL" and status(False, ["a", "b"]) == "FAIL: a; b"
    assert layer_thresholds(GATE) == "<= 1 step and <= 0.100% of elements"
    assert thresholds(GATE).startswith("per layer <= 1 step") and "accuracy within 0.5 pt" in thresholds(GATE)
    assert "logits within" not in thresholds(GATE)
    assert "logits within 3 output steps" in thresholds({**GATE, "max_logit_steps": 3})
    assert runtime_thresholds(_row()) == "gate >= 98.0 %, accuracy within 0.5 pt"
    assert runtime_thresholds(_row(accuracy=None)) == "gate >= 98.0 %"  # unlabelled: accuracy is not gated


def test_the_rounding_bound_is_named_where_it_applied():
    widened = runtime_thresholds(_row(min_agreement=94.0, rounding_baseline=96.0))
    assert widened.startswith("gate >= 94.0 %") and "own float64 evaluation on 96.000 %" in widened
    assert "float64" not in runtime_thresholds(_row())


def test_every_output_renders_the_same_verdict():
    from dfq_deploy.cli.validate_cmd import summary
    from dfq_deploy.validate.html_report import render_html

    row = _row(min_agreement=94.0, rounding_baseline=96.0)
    report = _report(row)
    words = runtime_thresholds(row)
    assert words in summary(report) and html.escape(words) in render_html(report)
    message = failure_message(report, Path("v.html"))
    assert message.startswith("parity gate failed: onnxruntime: top-1") and thresholds(GATE) in message
    assert html.escape(thresholds(GATE)) in render_html(report)
    assert "FAIL" in summary(report).splitlines()[0]
