"""Evaluation batches stay within memory at any input size, and cover every image once."""

import torch

from dfq_deploy.data.eval_set import BATCH_INPUT_VALUES, EvalSet, evaluate, fitting_batch


def _set(n: int, shape) -> EvalSet:
    return EvalSet(torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, *shape).contiguous(),
                   torch.zeros(n, dtype=torch.long), ["a"], "ramp")


def test_small_images_keep_the_requested_batch():
    assert fitting_batch((1, 28, 28), 500) == 500 and fitting_batch((3, 32, 32), 500) == 500
    sizes = [len(x) for x, _ in _set(1200, (1, 28, 28)).batches(500)]
    assert sizes == [500, 500, 200]


def test_large_images_get_smaller_batches_that_still_cover_every_image_in_order():
    shape = (3, 224, 224)
    b = fitting_batch(shape, 500)
    assert 1 <= b < 500 and b * 3 * 224 * 224 <= BATCH_INPUT_VALUES
    data = _set(2 * b + 3, shape)
    seen = torch.cat([x[:, 0, 0, 0] for x, _ in data.batches(500)])
    assert torch.equal(seen, torch.arange(2 * b + 3, dtype=torch.float32))
    assert fitting_batch((3, 4096, 4096), 500) == 1  # one image larger than the bound still runs


def test_evaluate_batches_large_images_by_the_same_bound():
    shape = (3, 224, 224)
    calls = []

    class Count(torch.nn.Module):
        def forward(self, x):
            calls.append(len(x))
            return torch.zeros(len(x), 2).index_fill_(1, torch.tensor([0]), 1.0)

    n = fitting_batch(shape, 1000) + 5
    data = _set(n, shape)
    assert evaluate(Count(), data.images, data.labels) == 100.0
    assert max(calls) == fitting_batch(shape, 1000) and sum(calls) == n
