# One command each on a fresh clone: `make demo`, `make test` (both install first).
# PYTHON: a Python 3.12 interpreter (lerobot 0.6.1 needs 3.12); override with `make install PYTHON=...`.
PYTHON ?= $(shell for p in python3.12 $$HOME/.pyenv/versions/3.12*/bin/python3.12 /usr/bin/python3.12; do \
            "$$p" -c 'import sys; assert sys.version_info[:2] == (3, 12)' >/dev/null 2>&1 && { echo "$$p"; break; }; done)
VENV := .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=
# pytest-xdist workers (the fault tests spend much of their time starting subprocesses).
PYTEST_WORKERS ?= 2

.PHONY: install demo demo-vision demo-vision-rl demo-expert test bench clean
install: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
	@test -n "$(PYTHON)" || { echo "No Python 3.12 found: install it or run make install PYTHON=/path/to/python3.12"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -r requirements.txt
	$(PY) -m pip install --no-deps -e .  # simulation_code/ as the package so101_sim + the LeRobot env plugin
	@touch $@

# The ReinFlow-fine-tuned flow policy (shipped checkpoint) on 10 randomized episodes, with a report.
demo: install
	cd simulation_code && ../$(PY) run_mujoco_simulation.py --model-type flow --policy-path checkpoints/flow_reinflow.pt \
		--episodes 10 --seed 0 --headless --video-dir ../outputs/demo/videos --summary-json ../outputs/demo/summary.json \
		--report ../outputs/demo/report

# The shipped image policy (cameras + joint state only, trained by stock lerobot-train; benchmarks/vision_bc.py)
# on 10 held-out episodes, with videos and a report.
demo-vision: install
	cd simulation_code && ../$(PY) run_mujoco_simulation.py --model-type lerobot --policy-path checkpoints/vision_bc \
		--episodes 10 --seed 0 --headless --video-dir ../outputs/demo_vision/videos \
		--summary-json ../outputs/demo_vision/summary.json --report ../outputs/demo_vision/report

# The SmolVLA-architecture image policy after ReinFlow (benchmarks/reinflow_vision.py --ship), through LeRobot's sampler.
demo-vision-rl: install
	cd simulation_code && ../$(PY) run_mujoco_simulation.py --model-type lerobot --policy-path checkpoints/smolvla_reinflow \
		--episodes 10 --seed 0 --headless --video-dir ../outputs/demo_vision_rl/videos \
		--summary-json ../outputs/demo_vision_rl/summary.json --report ../outputs/demo_vision_rl/report

# The scripted planning expert (500/500 fresh seeds, benchmarks/bench_expert.py).
demo-expert: install
	cd simulation_code && ../$(PY) run_mujoco_simulation.py --model-type scripted --episodes 10 --seed 0 \
		--headless --video-dir ../outputs/demo_expert/videos --summary-json ../outputs/demo_expert/summary.json

test: install
	$(PY) -m pytest tests -n $(PYTEST_WORKERS) $(PYTEST_ARGS)

bench: install
	$(PY) benchmarks/bench_env.py
	$(PY) benchmarks/bench_expert.py

clean:
	rm -rf outputs .pytest_cache
