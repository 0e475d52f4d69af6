# The two commands of the README. Both set themselves up on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
NODE_BIN := $(CURDIR)/node_modules/.bin
# The CDK CLI and jsii run on the Node.js 22 that package.json pins.
export PATH := $(NODE_BIN):$(PATH)
# Nothing here may reach AWS or the internet: no instance-metadata probes, no CDK CLI
# version check or telemetry (cdk.json also turns telemetry and notices off).
export AWS_EC2_METADATA_DISABLED := true
export CDK_DISABLE_VERSION_CHECK := true
export CDK_DISABLE_CLI_TELEMETRY := true

.PHONY: demo test lint synth bench clean FORCE

# The editable install is setuptools' strict mode: a tree of links to the project's files
# (under build/), which pyright, mypy and IDEs follow, where the default mode's import hook
# hides setup.py's mapping of the folders onto ernie_sm.* from them. A file added or removed
# needs the tree re-made: the install depends on the list of files, rewritten on a change.
FILES := $(VENV)/files.txt
$(FILES): FORCE
	@mkdir -p $(VENV)
	@find . \( -path './.*' -o -name node_modules -o -name build -o -name cdk.out -o -name tests \
	  -o -name __pycache__ \) -prune -o -type f -print | LC_ALL=C sort > $@.new
	@if cmp -s $@.new $@; then rm $@.new; else mv $@.new $@; fi

$(BIN)/ernie-sm: pyproject.toml setup.py $(FILES)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[cpu,prepare,serve,cdk,sdk,dev]' --config-settings editable_mode=strict
	touch $@

$(NODE_BIN)/cdk: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

# The demo rehearses the stack as it is now: synthesize first.
demo: synth
	$(BIN)/ernie-sm demo --dir build/demo

# pytest exits 5 when it collects nothing; report that plainly instead of as a crash.
test: $(BIN)/ernie-sm $(NODE_BIN)/cdk lint
	@$(BIN)/pytest; status=$$?; \
	if [ $$status -eq 5 ]; then echo "0 passed, 0 failed (pytest collected no tests)"; exit 0; fi; \
	exit $$status

lint: $(BIN)/ernie-sm $(NODE_BIN)/cdk
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(NODE_BIN)/pyright --project pyproject.toml

synth: $(BIN)/ernie-sm $(NODE_BIN)/cdk
	$(NODE_BIN)/cdk synth --quiet

bench: $(BIN)/ernie-sm
	$(BIN)/python benchmarks/bench_reader.py
	$(BIN)/python benchmarks/bench_train.py
	$(BIN)/python benchmarks/bench_prepare.py

clean:
	rm -rf $(VENV) build node_modules cdk.out
