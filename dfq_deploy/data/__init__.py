"""Evaluation data readers. Data-free training never reads these; only ``pretrain`` reads a training split."""

from .fashion_mnist import FASHION_MNIST_CLASSES, FASHION_MNIST_DIR, load_fashion_mnist
from .eval_set import EvalSet, evaluate, load_eval_set

__all__ = ["FASHION_MNIST_CLASSES", "FASHION_MNIST_DIR", "load_fashion_mnist", "EvalSet", "evaluate", "load_eval_set"]
