import numpy as np

from dfq_deploy.validate import compare_logits


def test_identical_logits_pass():
    a = np.random.default_rng(0).standard_normal((100, 10)).astype(np.float32)
    labels = a.argmax(1)
    r = compare_logits(a, a.copy(), labels, output_step=0.1, max_steps=1)
    assert r and r.top1_agreement == 100.0 and r.accuracy == 100.0 and r.max_diff_steps == 0


def test_disagreement_and_step_gate_fail():
    a = np.random.default_rng(0).standard_normal((1000, 10)).astype(np.float32)
    b = a.copy()
    b[0] = -b[0]  # flips the top-1 of one sample: 99.9 % agreement exactly
    r = compare_logits(a, b, output_step=0.5, min_agreement=99.9)
    assert r.top1_agreement == 99.9 and r.passed
    b[1] = -b[1]
    assert not compare_logits(a, b, min_agreement=99.9)
    c = a.copy()
    c[5, 3] += 0.3  # 3 steps of 0.1
    r = compare_logits(a, c, output_step=0.1, max_steps=1)
    assert r.max_diff_steps == 3.0 and not r
