# The two commands of the README. Both set themselves up on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Nothing here may reach AWS: no instance-metadata probes, fake credentials.
export AWS_EC2_METADATA_DISABLED := true

.PHONY: demo test lint bench clean

$(BIN)/ernie-sm: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[cpu,prepare,dev]'
	touch $@

demo: $(BIN)/ernie-sm
	$(BIN)/ernie-sm demo --dir build/demo

# pytest exits 5 when it collects nothing; report that plainly instead of as a crash.
test: $(BIN)/ernie-sm lint
	@$(BIN)/pytest; status=$$?; \
	if [ $$status -eq 5 ]; then echo "0 passed, 0 failed (pytest collected no tests)"; exit 0; fi; \
	exit $$status

lint: $(BIN)/ernie-sm
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: $(BIN)/ernie-sm
	$(BIN)/python benchmarks/bench_reader.py
	$(BIN)/python benchmarks/bench_train.py

clean:
	rm -rf $(VENV) build
