# The two commands a newcomer needs: `make demo` and `make test` (see README.md).
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_DIR ?= demo-data
PYTEST_ARGS ?=

.PHONY: demo test test-fast venv clean

$(VENV)/.installed: pyproject.toml docker/install-deps.sh
	test -x $(PY) || python3 -m venv $(VENV)
	bash docker/install-deps.sh $(PY) dev
	touch $@

venv: $(VENV)/.installed

test: $(VENV)/.installed
	bash docker/install-test-deps.sh
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: $(VENV)/.installed
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

demo: $(VENV)/.installed
	$(PY) -m app.demo --workdir $(DEMO_DIR)

clean:
	rm -rf $(DEMO_DIR) runs .pytest_cache
