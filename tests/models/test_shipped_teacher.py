"""The checkpoints shipped in the package: their cards must be true."""

import pytest

from dfq_deploy.data import evaluate, load_eval_set
from dfq_deploy.models import SHIPPED_TEACHER, load_teacher
from dfq_deploy.models.zoo import shipped_teachers, teacher_card_path

# the accuracy each shipped teacher is held to
FLOORS = {"resnet20_fmnist": 93.0, "mobilenetv2_fmnist": 92.0}


def test_every_shipped_teacher_has_a_floor():
    assert shipped_teachers() == sorted(FLOORS)
    assert teacher_card_path(None) == SHIPPED_TEACHER  # the default stays the ResNet-20


@pytest.mark.parametrize("name", sorted(FLOORS))
def test_shipped_teacher_reaches_its_card_accuracy(name):
    model, card = load_teacher(name)
    assert card.test_accuracy >= FLOORS[name]
    assert "dfq-deploy pretrain" in card.command and card.seed is not None and card.arch in card.command
    data = load_eval_set("fashion-mnist", card.mean, card.std)
    assert len(data) == 10000
    acc = evaluate(model, data.images, data.labels)
    assert acc == pytest.approx(card.test_accuracy, abs=0.011)
    assert acc >= FLOORS[name]
    assert teacher_card_path(name).with_suffix(".safetensors").is_file()
