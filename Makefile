# mmdyt: `make demo` runs the main job, `make test` the tests; both set up
# everything they need first (`make install`, a no-op once done).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip -q --disable-pip-version-check
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: install test demo demo-seg demo-video benchmark clean

install: $(STAMP)

$(STAMP): setup.py requirements/runtime.txt requirements/tests.txt requirements/mmcv_lite.txt
	@test -x $(PY) || { echo '[install] creating $(VENV) with $(PYTHON)'; $(PYTHON) -m venv $(VENV); }
	@echo '[install] installing pinned dependencies (requirements/*.txt)'
	$(PIP) install -r requirements/runtime.txt -r requirements/tests.txt
	@# keep a compiled mmcv if there is one; else the pure-Python mmcv-lite
	@$(PY) -c 'import mmcv' 2>/dev/null || $(PIP) install -r requirements/mmcv_lite.txt
	$(PIP) install --no-deps --no-build-isolation -e .
	@touch $@
	@echo '[install] done'

test: install
	$(PY) -m pytest tests $(PYTEST_ARGS)

demo: install
	@echo 'make demo is not implemented yet (segmentation demo: see issue 4)'; exit 1

clean:
	rm -rf work_dirs data/demo
