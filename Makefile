# mmdyt: `make demo` runs the main job, `make test` the tests; both set up
# everything they need first (`make install`, a no-op once done).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip -q --disable-pip-version-check
STAMP := $(VENV)/.installed-stamp
INSTALL_LOG := $(VENV)/install.log
PYTEST_ARGS ?=

.PHONY: install test lint demo demo-seg demo-video demo-det demo-swin benchmarks clean

install: $(STAMP)

$(STAMP): setup.py requirements/runtime.txt requirements/tests.txt requirements/deploy.txt requirements/mmcv_lite.txt
	@test -x $(PY) || { echo '[install] creating $(VENV) with $(PYTHON)'; $(PYTHON) -m venv $(VENV); }
	@echo '[install] installing the pinned dependencies (requirements/*.txt; pip output in $(INSTALL_LOG))'
	@$(PIP) install -r requirements/runtime.txt -r requirements/tests.txt -r requirements/deploy.txt > $(INSTALL_LOG) 2>&1 \
		|| { tail -30 $(INSTALL_LOG); exit 1; }
	@# keep a compiled mmcv if there is one; else the pure-Python mmcv-lite
	@if $(PY) -c 'import mmcv' 2>/dev/null; then echo '[install] keeping the installed mmcv'; \
	else echo '[install] installing mmcv-lite (requirements/mmcv_lite.txt)'; \
		$(PIP) install -r requirements/mmcv_lite.txt >> $(INSTALL_LOG) 2>&1 || { tail -30 $(INSTALL_LOG); exit 1; }; fi
	@$(PIP) install --no-deps --no-build-isolation -e . >> $(INSTALL_LOG) 2>&1 || { tail -30 $(INSTALL_LOG); exit 1; }
	@touch $@
	@echo '[install] done'

test: install
	$(PY) -m pytest tests $(PYTEST_ARGS)

lint: install
	$(PY) -m flake8 .

# The main job: generate data, pre-train the small demo ViT (it stands in for
# a downloaded checkpoint), adapt it frozen with DyT, evaluate.
demo: demo-seg

# Each stage's full output goes to work_dirs/<demo>/demo.log.
demo-seg: install
	@$(PY) tools/demo/run_demo.py seg

demo-video: install
	@$(PY) tools/demo/run_demo.py video

demo-det: install
	@$(PY) tools/demo/run_demo.py det

# The segmentation demo on a small Swin Transformer (DyTSwinTransformer).
demo-swin: install
	@$(PY) tools/demo/run_demo.py seg-swin

# Every command behind BENCHMARKS.md, in one run (about 90 minutes on 2 cores).
benchmarks: install
	@bash tools/analysis_tools/run_benchmarks.sh

clean:
	rm -rf work_dirs data/demo
