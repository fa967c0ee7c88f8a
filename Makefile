# The README's two commands: `make demo` (the main job) and `make test` (the tests).
# Each creates/updates the virtualenv and installs what it needs, Fashion-MNIST included.
VENV    ?= .venv
PYTHON  ?= python3
STAMP   := $(VENV)/.installed
FMNIST  := /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz
BROWSER := /usr/bin/chromium-headless-shell
SUDO    := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# Exact builds first (they lie on this machine's disk; an unpinned torch would pull a multi-GB CUDA build).
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1

.PHONY: demo test fmnist browser qemu clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip 'setuptools<81' wheel
	$(VENV)/bin/pip install -q $(TORCH_PINS)
	$(VENV)/bin/pip install -q -e '.[train,dev]'
	touch $@

fmnist:
	@test -f $(FMNIST) || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq dataset-fashion-mnist; }

# headless Chromium renders the validation report in a test (Debian package, ~50 s, no network at test time)
browser:
	@test -x $(BROWSER) || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium-headless-shell; }

# x86 hosts: qemu-user-static runs ONNX Runtime on an emulated AVX2 CPU without VNNI, so every CI machine proves
# that the default export computes the same integers there as natively (tests/runtimes/test_emulated.py)
X86     := $(filter x86_64 amd64,$(shell uname -m))
qemu:
	@test -z "$(X86)" || command -v qemu-x86_64-static >/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq qemu-user-static; }

demo: $(STAMP) fmnist
	$(VENV)/bin/dfq-deploy train-export --target onnxruntime $(ARGS)

test: $(STAMP) fmnist browser qemu
	DFQ_REQUIRE_BROWSER=1 DFQ_REQUIRE_QEMU=$(X86) $(VENV)/bin/python -m pytest -q $(ARGS)

clean:
	rm -rf $(VENV) runs .pytest_cache
