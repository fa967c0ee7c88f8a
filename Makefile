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

.PHONY: demo test fmnist browser clean

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

demo: $(STAMP) fmnist
	$(VENV)/bin/dfq-deploy train-export --target onnxruntime $(ARGS)

test: $(STAMP) fmnist browser
	DFQ_REQUIRE_BROWSER=1 $(VENV)/bin/python -m pytest -q $(ARGS)

clean:
	rm -rf $(VENV) runs .pytest_cache
