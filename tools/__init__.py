"""Developer and reliability tooling, run from a source checkout; not imported by the runtime.

`python -m tools.fault_drill` kills a training run at random points and checks that the
resumed run ends bit for bit where a straight run ends; `python -m tools.hostile_inputs`
writes a corpus of malformed images, masks and checkpoints to point the program at. Both are
used by the tests (tests/test_faults.py, tests/test_hostile_inputs.py) and start launch.py as a
separate process; anomaly_core/, funetgan_jax/ and gon_jax/ never import this package, and
pyproject.toml's package list leaves it out of an install.
"""
