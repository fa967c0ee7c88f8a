import importlib.util
import warnings

import pytest
import torch

warnings.filterwarnings("ignore", category=UserWarning)


def pytest_collection_modifyitems(config, items):
    has_gpu = torch.cuda.is_available()
    has_trt = importlib.util.find_spec("tensorrt") is not None
    for item in items:
        if "gpu" in item.keywords and not has_gpu:
            item.add_marker(pytest.mark.skip(reason="no CUDA GPU on this machine"))
        if "tensorrt" in item.keywords and not has_trt:
            item.add_marker(pytest.mark.skip(reason="TensorRT is not installed"))
        if "no_tensorrt" in item.keywords and has_trt:
            item.add_marker(pytest.mark.skip(reason="checks the behaviour without TensorRT, which is installed here"))


def make_tiny_teacher():
    """A small CIFAR-style ResNet-8 with non-trivial BN statistics (random weights)."""
    from dfq_deploy.models import build_model

    torch.manual_seed(0)
    m = build_model("resnet8", width=4, in_channels=1, num_classes=10)
    for mod in m.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.2, 0.2)
            mod.running_var.uniform_(0.5, 1.5)
            mod.weight.data.uniform_(0.5, 1.5)
            mod.bias.data.uniform_(-0.2, 0.2)
    m.fc.weight.data *= 30  # confident, class-dependent logits, like a trained classifier
    return m.eval()


def write_tiny_card(folder, teacher):
    """``teacher`` saved as safetensors + model card in ``folder``, as `dfq-deploy pretrain` writes them."""
    from safetensors.torch import save_file

    from dfq_deploy.data import FASHION_MNIST_CLASSES
    from dfq_deploy.models import ModelCard

    save_file(teacher.state_dict(), str(folder / "tiny.safetensors"))
    card = ModelCard(arch="resnet8", arch_kwargs={"width": 4, "in_channels": 1, "num_classes": 10},
                     input_shape=(1, 28, 28), mean=(0.2860,), std=(0.3530,), class_names=FASHION_MNIST_CLASSES,
                     weights="tiny.safetensors")
    (folder / "tiny.json").write_text(card.to_json())
    return folder / "tiny.json"


@pytest.fixture
def tiny_teacher():
    """A small CIFAR-style ResNet-8 with non-trivial BN statistics (random weights)."""
    return make_tiny_teacher()


@pytest.fixture
def tiny_card(tmp_path, tiny_teacher):
    """The tiny teacher saved as safetensors + model card, as `dfq-deploy pretrain` writes them."""
    return write_tiny_card(tmp_path, tiny_teacher)
