"""anomaly_core.training.workdir_lock: one process per workdir."""
import os
import subprocess
import sys

import pytest

from anomaly_core.training import workdir_lock
from anomaly_core.training.checkpointing import CheckpointError


def test_a_second_holder_is_refused_with_the_first_ones_pid(tmp_path):
    workdir = str(tmp_path / "run")
    with workdir_lock.hold(workdir) as path:
        assert open(path).read().strip() == str(os.getpid())
        # Another process: flock conflicts between processes (and between descriptions in one).
        code = ("import sys\nfrom anomaly_core.training import workdir_lock\n"
                f"try:\n    with workdir_lock.hold({workdir!r}):\n        sys.exit(0)\n"
                "except Exception as e:\n    print(e)\n    sys.exit(2)\n")
        other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                               cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        assert other.returncode == 2
        assert f"is in use by another run (process {os.getpid()}" in other.stdout
        with pytest.raises(CheckpointError, match=f"process {os.getpid()}"):
            with workdir_lock.hold(workdir):
                pass
    with workdir_lock.hold(workdir):  # released on exit: the next run gets it
        pass
