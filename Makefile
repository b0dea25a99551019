# The two commands: `make demo` (set up, run the workflow on the embedded demo, name the report)
# and `make test` (set up, run the whole test suite). Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
CORES ?= all
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test venv lint report clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[workflow,slurm,test]"
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/snakemake --cores $(CORES) --configfile config/config.yaml
	@echo "Report written: $(CURDIR)/results/demo/report.html"

test: $(STAMP)
	$(BIN)/python -m pytest

# Snakemake's own report of the demo run: the HTML reports and key tables in one archive.
report: demo
	$(BIN)/snakemake --configfile config/config.yaml --report report.zip
	@echo "Snakemake report written: $(CURDIR)/report.zip"

lint: $(STAMP)
	$(BIN)/snakemake --lint --configfile config/config.yaml
	$(BIN)/snakefmt --check Snakefile rules/
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

clean:
	rm -rf results resources logs benchmarks/out .snakemake report.zip
