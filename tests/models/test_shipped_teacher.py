"""The checkpoint shipped in the package: its card must be true."""

import pytest

from dfq_deploy.data import load_eval_set
from dfq_deploy.models import SHIPPED_TEACHER, load_teacher
from dfq_deploy.data import evaluate


def test_shipped_teacher_reaches_its_card_accuracy():
    model, card = load_teacher()
    assert card.test_accuracy >= 93.0
    assert "dfq-deploy pretrain" in card.command and card.seed is not None
    data = load_eval_set("fashion-mnist", card.mean, card.std)
    assert len(data) == 10000
    acc = evaluate(model, data.images, data.labels)
    assert acc == pytest.approx(card.test_accuracy, abs=0.011)
    assert acc >= 93.0
    assert SHIPPED_TEACHER.with_suffix(".safetensors").is_file()
