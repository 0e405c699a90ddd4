"""The comparison scripts' own virtual environments."""
import os
import subprocess
import sys


def ensure(venv, pins):
    """Re-runs the calling script under `venv`'s Python, creating it with `pins` first."""
    py = os.path.join(venv, "bin", "python")
    if os.path.realpath(sys.prefix) == os.path.realpath(venv):
        return
    if not os.path.exists(py):
        print(f"creating {venv} with {' '.join(pins)}", file=sys.stderr)
        subprocess.check_call([sys.executable, "-m", "venv", venv])
        subprocess.check_call([py, "-m", "pip", "install", "-q", *pins])
    os.execv(py, [py, *sys.argv])
