# Two commands do everything on a fresh machine:
#   make demo   - the main job
#   make test   - the whole test suite (unit tests, tutorials and notebooks in smoke mode)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.pi0lab-installed
JOBS   ?= 2

.PHONY: setup test demo clean

$(STAMP): pyproject.toml scripts/setup.sh
	bash scripts/setup.sh
	touch $(STAMP)

setup: $(STAMP)

# One torch thread per pytest worker: two workers x two threads on two cores thrash.
test: $(STAMP)
	PI0LAB_SMOKE=1 OMP_NUM_THREADS=1 $(PY) -m pytest -n $(JOBS) --nbmake tests tutorials notebooks

demo: $(STAMP)
	$(PY) scripts/demo.py

clean:
	rm -rf build runs
