# make test | make demo | make bench: each installs what it needs first (into $(PYTHON)).
PYTHON ?= python3
STAMP := .make
PYTEST_WORKERS ?= 2

.PHONY: install test test-export test-gpu demo bench clean fuzz

$(STAMP)/dev: pyproject.toml
	$(PYTHON) -m pip install -q -e '.[dev,tune,plot]'
	@mkdir -p $(STAMP) && touch $@

$(STAMP)/export: pyproject.toml
	$(PYTHON) -m pip install -q -e '.[dev,export]'
	@mkdir -p $(STAMP) && touch $@

$(STAMP)/bench: pyproject.toml
	$(PYTHON) -m pip install -q -e '.[dev,bench,tune,plot]'
	@mkdir -p $(STAMP) && touch $@

install: $(STAMP)/dev

test: $(STAMP)/dev
	@command -v nvcc >/dev/null || echo "note: nvcc not found; CUDA tests will be skipped"
	$(PYTHON) -c "import sys; from importlinter.cli import lint_imports_command as lint; sys.argv = ['lint-imports']; lint()"
	$(PYTHON) -m pytest -n $(PYTEST_WORKERS) -q

# kd.export against PyTorch and JAX (the `export` extra: torch, jax); `make test` runs the rest of
# the export tests (C library, spec) and skips these without torch and jax
test-export: $(STAMP)/export
	$(PYTHON) -m pytest -n $(PYTEST_WORKERS) -q tests/test_export_torch.py tests/test_export_jax.py \
		"tests/test_docs.py::test_tutorial_runs[09_export.py]"

# the whole suite, with every CUDA test also run on the real GPU (needs nvcc, a GPU, CuPy or PyCUDA)
test-gpu: $(STAMP)/dev
	$(PYTHON) -m pytest -n $(PYTEST_WORKERS) -q --gpu -rs

# differential fuzzing soak: make fuzz FUZZ_SECONDS=600 (or FUZZ_GRAPHS=10000); FUZZ_ARGS="--profile nested"
fuzz: $(STAMP)/dev
	$(PYTHON) tests/fuzz_graphs.py $(if $(FUZZ_GRAPHS),--graphs $(FUZZ_GRAPHS),--seconds $(or $(FUZZ_SECONDS),600)) \
		$(if $(FUZZ_JOBS),-j $(FUZZ_JOBS)) $(if $(FUZZ_OUT),--out $(FUZZ_OUT)) $(FUZZ_ARGS)

# trains an MLP and a CNN on Fashion-MNIST (DEMO_EPOCHS, DEMO_CNN_TRAIN: see examples/demo_fashion_mnist.py);
# the data is the Debian package dataset-fashion-mnist, installed here when missing (as root)
FASHION_MNIST_DIR ?= /usr/share/datasets/fashion-mnist
demo: $(STAMP)/dev
	@if [ ! -f $(FASHION_MNIST_DIR)/train-images-idx3-ubyte.gz ] && [ -z "$$KERNELDSL_FASHION_MNIST" ]; then \
		if [ "$$(id -u)" = 0 ]; then apt-get install -y dataset-fashion-mnist || \
			(apt-get update && apt-get install -y dataset-fashion-mnist); \
		else echo "Fashion-MNIST is missing: run 'sudo apt-get install dataset-fashion-mnist'" >&2; exit 1; fi; \
	fi
	$(PYTHON) examples/demo_fashion_mnist.py

bench: $(STAMP)/bench
	$(PYTHON) benchmarks/bench_core.py
	$(PYTHON) benchmarks/bench_rows.py
	$(PYTHON) benchmarks/bench_cpu.py
	$(PYTHON) benchmarks/bench_autodiff.py
	$(PYTHON) benchmarks/bench_function.py --quick
	$(PYTHON) benchmarks/bench_defaults.py --rounds 3
	$(PYTHON) benchmarks/bench_gpu.py

clean:
	rm -rf $(STAMP) .pytest_cache .hypothesis build *.egg-info
