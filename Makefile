# Two set-up commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed

.PHONY: demo test fuzz vm-test bench bench-boot venv clean check deb

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# setuptools prints an informational notice on every editable install: not a problem, hidden.
	PYTHONWARNINGS="ignore:Editable installation" $(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

# The demo keeps its target root and state in ./demo (the README's commands read it).
demo: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" bash scripts/demo.sh

# Includes the QEMU boot tests (tests/vm) where the machine can run them (root, QEMU,
# mmdebstrap, xorriso); CIDAG_VM_TESTS=0 skips them.
# Two workers (pytest-xdist), boot tests first: each QEMU guest keeps one core busy, so two
# boots at a time on two cores halve the suite; worksteal evens out the tail.
TEST_JOBS ?= 2
test: $(STAMP)
	$(BIN)/python -m pytest -q -n $(TEST_JOBS) --dist worksteal

# The fuzz suite with many more cases than `make test` runs (tests/test_fuzz.py).
FUZZ_EXAMPLES ?= 20000
fuzz: $(STAMP)
	CIDAG_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/python -m pytest -q tests/test_fuzz.py

# Only the boot tests, and a missing tool is an error rather than a skip.
vm-test: $(STAMP)
	CIDAG_VM_TESTS=1 $(BIN)/python -m pytest -q tests/vm

bench: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python bench/run.py

# cidag against cloud-init 22.4.2 and 25.x and the bare guest on real boots (root, QEMU; 25 boots,
# over an hour on a loaded 2-core host: bench/README.md).
bench-boot: $(STAMP)
	$(BIN)/python bench/boot.py

check: $(STAMP)
	$(BIN)/cidag check

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache demo

# The Debian package (dist/cidag_VERSION_all.deb): the program, the units, the generator and
# the manifests in /etc/cidag (docs/image-builders.md). Needs only python3 and dpkg-deb.
deb:
	$(PYTHON) scripts/build_deb.py --out dist
