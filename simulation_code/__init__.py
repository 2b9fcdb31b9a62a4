"""so101_sim: the SO-101 MuJoCo simulation, its Gymnasium env, policies and ReinFlow training.

simulation_code/ installed as a package (``make install`` or ``pip install -e .``; see pyproject.toml).
The entry scripts still run from simulation_code/ (``python run_mujoco_simulation.py``); modules
import each other as ``from so101_sim import so101_mujoco_utils``. This file imports nothing: a
Python start-up hook (:mod:`so101_sim.import_hooks`) imports the package in every interpreter.
"""
