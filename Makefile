# mmdyt: `make demo` runs the main job, `make test` the tests; both set up
# everything they need first (`make install`, a no-op once done).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip -q --disable-pip-version-check
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: install test lint demo demo-seg demo-video clean

install: $(STAMP)

$(STAMP): setup.py requirements/runtime.txt requirements/tests.txt requirements/mmcv_lite.txt
	@test -x $(PY) || { echo '[install] creating $(VENV) with $(PYTHON)'; $(PYTHON) -m venv $(VENV); }
	@echo '[install] installing pinned dependencies (requirements/*.txt)'
	$(PIP) install -r requirements/runtime.txt -r requirements/tests.txt
	@# keep a compiled mmcv if there is one; else the pure-Python mmcv-lite
	@if $(PY) -c 'import mmcv' 2>/dev/null; then echo '[install] keeping the installed mmcv'; \
	else echo '[install] installing mmcv-lite (requirements/mmcv_lite.txt)'; $(PIP) install -r requirements/mmcv_lite.txt; fi
	$(PIP) install --no-deps --no-build-isolation -e .
	@touch $@
	@echo '[install] done'

test: install
	$(PY) -m pytest tests $(PYTEST_ARGS)

lint: install
	$(PY) -m flake8 .

# The main job: generate data, pre-train the small demo ViT (it stands in for
# a downloaded checkpoint), adapt it frozen with DyT, evaluate.
demo: demo-seg

demo-seg: install
	$(PY) tools/demo/make_demo_data.py --task seg --out data/demo
	$(PY) tools/demo/pretrain_demo_vit.py --out data/demo/demo_vit.pth
	$(PY) tools/train.py configs/demo/seg_demo.py --work-dir work_dirs/seg_demo
	$(PY) tools/test.py configs/demo/seg_demo.py "$$(cat work_dirs/seg_demo/last_checkpoint)" --work-dir work_dirs/seg_demo/test

demo-video: install
	$(PY) tools/demo/make_demo_data.py --task video --out data/demo
	$(PY) tools/demo/pretrain_demo_vit.py --out data/demo/demo_vit.pth
	$(PY) tools/train.py configs/demo/video_demo.py --work-dir work_dirs/video_demo
	$(PY) tools/test.py configs/demo/video_demo.py "$$(cat work_dirs/video_demo/last_checkpoint)" --work-dir work_dirs/video_demo/test

clean:
	rm -rf work_dirs data/demo
