# The two commands: `make run` (set up, then the main job: the MNIST-1D benchmark, built offline, where
# generators can be told apart) and `make test` (set up, then the whole test suite). Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
ARGS ?=
# The suite runs on this many processes (pytest-xdist, --dist loadfile): a file's tests run in one of them, one at
# a time (the two-host tests crash a host; the DeepSpeed tests share torchrun's port). Files go out in the order
# pytest collects them (--no-loadscope-reorder): the few long cluster, DeepSpeed and pipeline files first, the
# many short unit files last, where they even out the workers' ends.
TEST_WORKERS ?= 2

.PHONY: run test test-fast setup lint bench benchmark

run: setup
	$(BIN)/python launch/sweep.py $(ARGS)

# The MNIST-1D benchmark over 3 seeds (a Hydra multirun); prints the table of means and stds.
benchmark: setup
	$(BIN)/python launch/sweep.py -m task=mnist1d_mlp seed=0,1,2 paths.output_dir=outputs/mnist1d_bench $(ARGS)

# The local SLURM cluster and the two-host one are started first (idempotent); the two hosts are stopped after
# the suite, pass or fail. With PDIFF_REQUIRE_CLUSTER=1 a cluster test that cannot reach its cluster fails instead
# of skipping, and with PDIFF_REQUIRE_NETNS=1 so does the offline MNIST-1D test where `unshare --net` (a network
# namespace: root or user namespaces) is not allowed.
test: setup
	bash slurm/local-cluster.sh up
	bash slurm/two-hosts.sh up
	$(BIN)/ruff check pdiff launch tests benchmarks && $(BIN)/ruff format --check pdiff launch tests benchmarks
	PDIFF_REQUIRE_CLUSTER=1 PDIFF_REQUIRE_NETNS=1 $(BIN)/python -m pytest tests -n $(TEST_WORKERS) --durations=15 \
	  --dist loadfile --no-loadscope-reorder $(ARGS); \
	  status=$$?; bash slurm/two-hosts.sh stop; exit $$status

# The unit tier alone (a few minutes): no root, no SLURM cluster, no pipeline or benchmark subprocess.
test-fast: setup
	$(BIN)/ruff check pdiff launch tests benchmarks && $(BIN)/ruff format --check pdiff launch tests benchmarks
	$(BIN)/python -m pytest tests/unit -m "not slow" $(ARGS)

setup: $(VENV)/.installed

# torch and torchvision first, pinned to the releases on this machine's disk (pip's cap stays); pip's output goes to
# .venv/setup.log, and a failure is one line naming it.
$(VENV)/.installed: pyproject.toml
	VENV=$(VENV) bash scripts/setup-venv.sh $(PYTHON)

lint: setup
	$(BIN)/ruff check pdiff launch tests benchmarks && $(BIN)/ruff format --check pdiff launch tests benchmarks

bench: setup
	$(BIN)/python benchmarks/pipeline.py --out benchmarks/results/pipeline.json task=mnist1d_mlp
