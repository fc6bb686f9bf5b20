# One entry point for the course. Every target creates or reuses .venv in the repo root.
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.circuitlab-installed
PIP    := $(PY) -m pip --disable-pip-version-check --quiet

.PHONY: setup course test check browser sandbox bench classroom explore clean

setup: $(STAMP)

# torch goes first and pinned: 2.13.0 is a CPU build on this machine's disk, while an
# unpinned torch (pulled in by transformer-lens) would download a multi-GB CUDA build.
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install --upgrade pip
	$(PIP) install torch==2.13.0
	$(PIP) install -e '.[dev]'
	touch $(STAMP)

## make course: run every chapter with the reference solutions on the offline default model, grade, scorecard
course: $(STAMP)
	$(PY) -m circuitlab_graders render --out build

## make test: the test suite, one worker per core (4 at most: each loads the models), each test file
## on one worker (tests/conftest.py); installs Debian's chromium for the browser tests and bubblewrap
## for the sandboxed classroom grader when it can
test: $(STAMP) browser sandbox
	$(PY) -m pytest -q -n auto --maxprocesses 4 --dist loadgroup

browser:
	@command -v chromium >/dev/null 2>&1 || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) || \
	  echo "Chromium could not be installed: the browser tests will be skipped."

sandbox:
	@command -v bwrap >/dev/null 2>&1 || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null) || \
	  echo "bubblewrap could not be installed: the sandbox tests will be skipped."

## make check NB=chapters/00_setup.ipynb: grade one notebook
check: $(STAMP)
	$(PY) -m circuitlab_graders check $(NB)

## make bench: time the fast sweeps against transformer_lens.patching, every check, and the patching explorer
## (click to exact heatmaps, four visitors at once) against the tutorial page's approach (minutes; not a test)
bench: $(STAMP)
	$(PY) benchmarks/patching_speed.py
	$(PY) benchmarks/explorer_speed.py

## make explore: the patching explorer, a web page at http://localhost:7860 (Ctrl+C stops it)
explore: $(STAMP)
	$(PY) -m circuitlab explore

## make classroom: generate the nbgrader course directory classroom/ (README: "For instructors")
classroom: $(STAMP)
	$(PY) -m circuitlab_graders course classroom

clean:
	rm -rf build .pytest_cache
