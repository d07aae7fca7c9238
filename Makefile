# Two commands for a user: `make demo` (main job) and `make test` (tests). Both set up first.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
PY := .venv/bin/python
MMAL := .venv/bin/mmal

.PHONY: setup demo test bench clean

setup:
	@bash scripts/setup.sh

demo: setup
	$(MMAL) demo

test: setup
	$(PY) -m pytest -q -p no:cacheprovider tests

bench: setup
	$(PY) bench/encode.py && $(PY) bench/train.py && $(PY) bench/knn.py && $(PY) bench/select.py

clean:
	rm -rf .venv build *.egg-info .pytest_cache
