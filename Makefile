# The two commands of the quick start: `make run` and `make test`.
# Both create or update .venv first; `make test` also installs the system programs
# the tests drive (tests/install-system-packages.sh). Nothing else to do by hand.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch first, then sam2 built against it (see docs/architecture.md, "Dependencies").
# Override on other machines, e.g. TORCH_PACKAGES="torch torchvision" for the newest.
TORCH_PACKAGES ?= torch==2.14.1 torchvision==0.29.1
SAM2_SDIST_SHA256 := 7e0ea252d43c10d853e3acfce0b5770ac683c30481bd6de311300e9d44f45b74
PYTEST_ARGS ?=

.PHONY: run test install system-packages lint typecheck bench mutate clean

run: install
	$(BIN)/sam2fleet up $(ARGS)

test: install system-packages
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Programs the tests drive as real peers, each as `program=Debian package`; installed
# when missing (tests/install-system-packages.sh says what and why):
#   prometheus    tests/observability and tests/multihost scrape live fleets
#   chromium      tests/browser drives the playground page through Playwright
#   redis-server, redis-cli, ip   Sentinel sets, hosts in network namespaces, the k8s
#                 Redis scripts (tests/faults, tests/multihost, tests/deploy)
TEST_PROGRAMS := prometheus=prometheus chromium=chromium redis-server=redis-server \
	redis-cli=redis-tools ip=iproute2

system-packages: install
	@bash tests/install-system-packages.sh $(TEST_PROGRAMS)
	@bash tests/install-kubectl.sh $(VENV)

lint: install typecheck
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# mypy resolves modules from folders, not from setuptools' package-dir mapping, so it
# reads the packages through a tree of links laid out as they install.
MYPY_TREE := build/mypy-tree
typecheck: install
	@rm -rf $(MYPY_TREE) && mkdir -p $(MYPY_TREE)/sam2fleet
	@for f in sam2fleet/*.py sam2fleet/*/; do ln -s "$(CURDIR)/$${f%/}" $(MYPY_TREE)/sam2fleet/; done
	@for d in api worker shared; do ln -s "$(CURDIR)/$$d" $(MYPY_TREE)/sam2fleet/$$d; done
	cd $(MYPY_TREE) && $(CURDIR)/$(BIN)/mypy --config-file $(CURDIR)/pyproject.toml -p sam2fleet

# Mutation testing of the modules that guard input, limits, admission, records and
# masks (tests/mutation/targets.toml), each against its own tests; not part of
# `make test` (about 20 minutes on 2 cores). One module: make mutate MODULES=api/limits.py
MUTATION_TOOL := cosmic-ray==8.7.0
MODULES ?=
mutate: install
	$(BIN)/python -m pip install --quiet $(MUTATION_TOOL)
	$(BIN)/python tests/mutation/run.py $(MODULES)

bench: install
	$(BIN)/python benchmarks/overhead.py $(ARGS)

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "sam2fleet needs Python 3.11, found " + sys.version' 
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/python -m pip install --quiet $(TORCH_PACKAGES)
	# sam2 from its pinned sdist, verified, built without isolation against the torch
	# above (isolation would download a second multi-GB torch just to run setup.py);
	# SAM2_BUILD_CUDA=0: the optional CUDA extension needs nvcc (see docs).
	rm -rf $(VENV)/sdist && $(BIN)/python -m pip download --quiet --no-deps --no-binary :all: --no-build-isolation \
		sam2==1.1.0 -d $(VENV)/sdist
	echo "$(SAM2_SDIST_SHA256)  $(VENV)/sdist/sam2-1.1.0.tar.gz" | sha256sum -c -
	SAM2_BUILD_CUDA=0 $(BIN)/python -m pip install --quiet --no-build-isolation \
		$(VENV)/sdist/sam2-1.1.0.tar.gz
	# setuptools prints an "Editable installation" notice for every editable install
	# whose packages install from other folders (our package-dir mapping): expected
	# here, and no fault, so it is filtered by its message alone.
	PYTHONWARNINGS="ignore:Editable installation" \
		$(BIN)/python -m pip install --quiet -e '.[server,model,dev]'
	touch $@

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache
