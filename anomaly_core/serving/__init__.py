"""A trained run used: the Python API, predict, export."""
