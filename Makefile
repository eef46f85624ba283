# `make run` and `make test` bootstrap .venv from the lock on first use, then do their job.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.fclab-installed
export DVC_NO_ANALYTICS := 1
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: run test faults lock clean browser rref plots

$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
	-$(BIN)/fclab cache --warm  # one-off compilation and anatomy, as pip compiles bytecode (optional: a bad params.yaml only defers it)
	touch $(STAMP)

# The page `make plots` has `dvc plots show` fill: Vega inlined from the vl-convert wheel, so it opens offline.
.dvc/plots/offline.html: $(STAMP)
	$(BIN)/python -m fclab.framework.report.dvcviews $@

plots: .dvc/plots/offline.html
	$(BIN)/dvc plots show --html-template .dvc/plots/offline.html

run: $(STAMP)
	$(BIN)/dvc repro
	@$(BIN)/python -c "from fclab.framework.commands import headline_lines; print('report: reports/index.html'); print('\n'.join(headline_lines()))"

# The report test drives Debian's chromium (playwright is only its driver; nothing is downloaded).
browser:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium; }

# The statistics tests compare with R (nlme::gls, emmeans, lme4/lmerTest), from Debian's packages.
rref:
	@command -v Rscript >/dev/null 2>&1 && Rscript -e 'for (p in c("nlme","emmeans","lmerTest","numDeriv","pbkrtest")) library(p, character.only=TRUE)' >/dev/null 2>&1 || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends r-base-core r-cran-nlme r-cran-emmeans r-cran-numderiv r-cran-lme4 r-cran-lmertest r-cran-pbkrtest; }

test: $(STAMP) browser rref
	@echo "tests: started $$(date -u +%T) (install done)"
	$(BIN)/python -m pytest -q

# Stages killed at every write point, a full disk, unreadable inputs, concurrent runs (~10 min).
faults: $(STAMP)
	$(BIN)/python -m pytest -q -m faults tests/test_faults.py

lock:
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -r requirements.in
	$(BIN)/python -m pip freeze --exclude-editable | grep -v '^fclab' > requirements.lock

clean:
	rm -rf results reports data/simulated
