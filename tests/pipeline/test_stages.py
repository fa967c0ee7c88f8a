"""The pieces a run is made of: stage timings, what a recipe asks of the run, out-of-memory classification, and
the summary's verdict words."""

import pytest
import torch

from dfq_deploy.pipeline.context import Timings
from dfq_deploy.pipeline.failures import is_out_of_memory
from dfq_deploy.pipeline.resolve import has_compute_budget, keeps_pixel_range


def test_a_stage_is_timed_only_when_it_finishes():
    timings = Timings()
    with timings.measure("train"):
        pass
    with pytest.raises(ValueError), timings.measure("export"):
        raise ValueError("failed")
    assert list(timings) == ["train"] and timings["train"] >= 0


def test_what_a_recipe_asks_of_the_run_is_read_from_its_settings():
    from dfq_deploy.recipes import RECIPES

    asks = {name: (keeps_pixel_range(cls()), has_compute_budget(cls())) for name, (cls, _) in RECIPES.items()}
    assert asks["lis"][0] and asks["dfqf"][0] and not asks["ptq"][0]
    assert asks["ptq"][1]


def test_out_of_memory_is_told_from_other_runtime_errors():
    assert is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory"))
    assert is_out_of_memory(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 9 bytes"))
    assert not is_out_of_memory(RuntimeError("shape mismatch"))


def test_the_summary_words_the_verdict_as_every_other_output():
    from dfq_deploy.pipeline import summary_text
    from dfq_deploy.validate.gate import Gate
    from dfq_deploy.validate.verdict import layer_thresholds, runtime_thresholds

    gate = Gate().to_dict()
    parity = {"runtime": "onnxruntime", "accuracy": 90.0, "reference_accuracy": 90.5, "top1_agreement": 95.0,
              "min_agreement": 94.0, "max_accuracy_diff": 0.5, "rounding_baseline": 96.0, "max_abs_diff": 0.25,
              "max_diff_steps": 2.5}
    report = {"dfq_deploy_version": "0", "target": "onnxruntime", "recipe": "ptq", "scheme_tag": "W4A4",
              "teacher": {"accuracy": 91.0}, "parity": parity,
              "census": {"integer_compute": 3, "float_compute": [], "op_counts": {"QLinearConv": 3}},
              "gate": {"passed": False, "failures": ["a", "b"], **gate,
                       "layers": {"worst_steps": 1.0, "worst_mismatch": 0.0, "worst_unexplained": 0.0}},
              "machine": {}, "eval": {"name": "synthetic", "samples": 10, "labelled": True},
              "timings_s": {"total": 3.0}, "scheme": {"act_bits": 4, "weight_bits": 4}}
    text = summary_text(report)
    assert runtime_thresholds(parity) in text and "float64 evaluation on 96.000 %" in text
    assert f"(gate {layer_thresholds(gate)})" in text and "parity gate               FAIL: a; b" in text
    assert "budget" not in text  # nothing was scaled: no budget line
    scaled = {"gmac_per_image": 0.2995, "work_per_image": 1.969, "reconstruction_work_per_image": 3.64,
              "budget_gmac": 5500.0, "scaled": {"calib_batches": 1, "zeroq_steps": 23, "recon.iters": 47}}
    budget_line = [line for line in summary_text({**report, "budget": scaled}).splitlines() if "budget" in line]
    assert budget_line == ["  budget                    1.97 GMAC-equivalents per image: scaled to fit "
                           "budget_gmac=5500: calib_batches=1, zeroq_steps=23, recon.iters=47"]
