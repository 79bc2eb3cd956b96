# mmdyt: `make demo` runs the main job, `make test` the tests; both set up
# everything they need first (`make install`, a no-op once done).
PYTHON ?= python3
# The stack to test: `newest` (the default: the newest releases tested) or
# `oldest` (the oldest supported: torch 2.1, as OpenMMLab's compiled mmcv
# 2.1.0 wheels need); requirements/constraints/$(STACK).txt pins it exactly.
STACK ?= newest
VENV ?= $(if $(filter newest,$(STACK)),.venv,.venv-$(STACK))
CONSTRAINTS := requirements/constraints/$(STACK).txt
PY := $(VENV)/bin/python
PIP := $(PY) -m pip -q --disable-pip-version-check
STAMP := $(VENV)/.installed-stamp
INSTALL_LOG := $(VENV)/install.log
PYTEST_ARGS ?=

.PHONY: install test test-oldest lint docs demo demo-seg demo-video demo-det demo-swin benchmarks clean

install: $(STAMP)

# mmdyt with its tests and deployment extras, at the versions of
# $(CONSTRAINTS); mmcv is kept if a (compiled) one is installed, else
# mmcv-lite comes in.
$(STAMP): setup.py requirements/*.txt $(CONSTRAINTS)
	@test -x $(PY) || { echo '[install] creating $(VENV) with $(PYTHON)'; $(PYTHON) -m venv $(VENV); }
	@echo '[install] installing mmdyt and the $(STACK) tested stack ($(CONSTRAINTS); pip output in $(INSTALL_LOG))'
	@$(PIP) install -c $(CONSTRAINTS) -e '.[tests,deploy]' > $(INSTALL_LOG) 2>&1 \
		|| { tail -30 $(INSTALL_LOG); exit 1; }
	@if $(PY) -c 'import mmcv' 2>/dev/null; then echo '[install] keeping the installed mmcv'; \
	else echo '[install] installing mmcv-lite (requirements/mmcv_lite.txt)'; \
		$(PIP) install -c $(CONSTRAINTS) -r requirements/mmcv_lite.txt >> $(INSTALL_LOG) 2>&1 || { tail -30 $(INSTALL_LOG); exit 1; }; fi
	@touch $@
	@echo '[install] done'

test: install
	$(PY) -m pytest tests $(PYTEST_ARGS)

# The suite on the oldest supported stack, in its own virtualenv.
test-oldest:
	@$(MAKE) --no-print-directory test STACK=oldest

lint: install
	$(PY) -m flake8 .

# The documentation site (mkdocs.yml, docs/en) in strict mode: a broken
# internal link or anchor, or a page missing from the nav, fails it. The
# site goes to $(VENV)/site (not committed).
docs: install
	@$(PIP) install -c $(CONSTRAINTS) -r requirements/docs.txt >> $(INSTALL_LOG) 2>&1 || { tail -30 $(INSTALL_LOG); exit 1; }
	$(PY) -m mkdocs build --strict --site-dir $(VENV)/site

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

# Every command behind docs/en/benchmarks/, in one run (about 90 minutes on 2 cores).
benchmarks: install
	@bash tools/analysis_tools/run_benchmarks.sh

clean:
	rm -rf work_dirs data/demo
