"""The comparison scripts' own virtual environments."""
import os
import subprocess
import sys


def ensure(venv, pins):
    """Re-runs the calling script under `venv`'s Python, creating it with `pins` first."""
    py = os.path.join(venv, "bin", "python")
    if os.path.realpath(sys.prefix) == os.path.realpath(venv):
        return
    # The pins the venv was made with; a venv made with other pins is brought up to these.
    stamp = os.path.join(venv, "contrail-pins.txt")
    want = "\n".join(sorted(pins)) + "\n"
    if not os.path.exists(py):
        print(f"creating {venv} with {' '.join(pins)}", file=sys.stderr)
        subprocess.check_call([sys.executable, "-m", "venv", venv])
    have = open(stamp).read() if os.path.exists(stamp) else None
    if have != want:
        subprocess.check_call([py, "-m", "pip", "install", "-q", *pins])
        with open(stamp, "w") as f:
            f.write(want)
    os.execv(py, [py, *sys.argv])
