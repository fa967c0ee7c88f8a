import pytest
import torch

from dfq_deploy.errors import ModelError
from dfq_deploy.models import ModelCard, build_model, load_teacher, load_weights, read_state_dict


def test_resnet20_shape_and_depth():
    m = build_model("resnet20", in_channels=1, num_classes=10)
    convs = [x for x in m.modules() if isinstance(x, torch.nn.Conv2d)]
    assert len(convs) == 21  # 1 stem + 18 block convs + 2 projection shortcuts
    assert m(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_resnet_is_configurable():
    m = build_model("resnet", depth=32, width=8, in_channels=3, num_classes=7)
    assert m(torch.randn(1, 3, 40, 36)).shape == (1, 7)
    assert sum(isinstance(x, torch.nn.Conv2d) for x in m.modules()) == 1 + 30 + 2


def test_torchvision_models_by_name():
    m = build_model("torchvision:resnet18", num_classes=5)
    assert m(torch.randn(1, 3, 64, 64)).shape == (1, 5)
    assert build_model("torchvision:mobilenet_v2", num_classes=3)(torch.randn(1, 3, 64, 64)).shape == (1, 3)


def test_small_mobilenet_v2_has_inverted_residuals_at_28x28():
    from dfq_deploy.models.mobilenet_small import SmallMobileNetV2

    m = build_model("mobilenetv2", width=8, in_channels=1, num_classes=10)
    assert isinstance(m, SmallMobileNetV2) and m(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    convs = [x for x in m.modules() if isinstance(x, torch.nn.Conv2d)]
    depthwise = [c for c in convs if c.groups > 1 and c.groups == c.in_channels == c.out_channels]
    assert len(depthwise) == 11 and all(c.kernel_size == (3, 3) for c in depthwise)  # one per block
    assert sum(b.residual for b in m.blocks) == 7  # every block that keeps its shape adds its input
    assert all(isinstance(x, torch.nn.ReLU6) for x in m.modules() if isinstance(x, (torch.nn.ReLU, torch.nn.ReLU6)))
    feature = m.head(m.blocks(m.stem(torch.randn(1, 1, 28, 28))))
    assert feature.shape[-2:] == (4, 4)  # three stride-2 stages
    with pytest.raises(ModelError, match="width must be even"):
        build_model("mobilenetv2", width=7)


@pytest.mark.parametrize("name", ["resnet21", "vgg", "torchvision:nope"])
def test_unknown_models_are_user_errors(name):
    with pytest.raises(ModelError):
        build_model(name)


def test_weights_roundtrip_and_mismatch(tmp_path):
    from safetensors.torch import save_file

    a = build_model("resnet8", width=4)
    save_file(a.state_dict(), str(tmp_path / "w.safetensors"))
    b = load_weights(build_model("resnet8", width=4), tmp_path / "w.safetensors")
    x = torch.randn(2, 1, 28, 28)
    assert torch.equal(a.eval()(x), b.eval()(x))
    with pytest.raises(ModelError, match="do not fit"):
        load_weights(build_model("resnet8", width=8), tmp_path / "w.safetensors")


def test_pickled_objects_are_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"w": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(ModelError, match="weights-only"):
        read_state_dict(tmp_path / "evil.pt")


def test_plain_torch_state_dict_is_accepted(tmp_path):
    m = build_model("resnet8", width=4)
    torch.save(m.state_dict(), tmp_path / "w.pt")
    assert set(read_state_dict(tmp_path / "w.pt")) == set(m.state_dict())


def test_load_teacher_from_card(tiny_card, tiny_teacher):
    model, card = load_teacher(tiny_card)
    x = torch.randn(3, 1, 28, 28)
    assert torch.allclose(model(x), tiny_teacher(x))
    assert card.input_shape == (1, 28, 28)


def test_bad_card_is_a_model_error(tmp_path):
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ModelError):
        ModelCard.from_json(tmp_path / "bad.json")
    with pytest.raises(ModelError):
        load_teacher(tmp_path / "missing.json")


def test_safetensors_weights_of_a_versioned_module_load(tmp_path):
    """torchvision's MNASNet refuses a state dict without its module version, which safetensors does not keep."""
    from safetensors.torch import save_file

    model = build_model("torchvision:mnasnet0_5", num_classes=10)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "m.safetensors"))
    fresh = build_model("torchvision:mnasnet0_5", num_classes=10)
    load_weights(fresh, tmp_path / "m.safetensors")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), fresh.state_dict().values()))


def test_a_shipped_teacher_is_picked_by_name_and_a_file_of_that_name_wins(tmp_path, monkeypatch):
    from dfq_deploy.models import SHIPPED_TEACHER
    from dfq_deploy.models.zoo import shipped_teachers, teacher_card_path

    assert "resnet20_fmnist" in shipped_teachers()
    assert teacher_card_path(None) == SHIPPED_TEACHER == teacher_card_path("resnet20_fmnist")
    monkeypatch.chdir(tmp_path)
    assert load_teacher("resnet20_fmnist")[1].arch == "resnet20"
    (tmp_path / "resnet20_fmnist").write_text("{}")  # the user's own file of that name is what they mean
    assert teacher_card_path("resnet20_fmnist") == tmp_path.joinpath("resnet20_fmnist").relative_to(tmp_path)
    assert teacher_card_path("sub/resnet20_fmnist") == tmp_path.joinpath("sub/resnet20_fmnist").relative_to(tmp_path)
    with pytest.raises(ModelError) as e:
        load_teacher("no_such_teacher")
    assert "resnet20_fmnist" in e.value.hint
