"""Fixtures shared by the tests (tests/) and the benchmarks (bench/): the shipped MNIST, loaded once."""

import pytest

from fastnet.datasets import load_mnist


@pytest.fixture(scope="session")
def mnist_train():
    return load_mnist("train")


@pytest.fixture(scope="session")
def mnist_test():
    return load_mnist("test")
