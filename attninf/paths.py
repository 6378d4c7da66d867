"""Where attninf keeps its cache: $ATTNINF_HOME, else $XDG_CACHE_HOME/attninf,
else ~/.cache/attninf."""
import os
from pathlib import Path


def home() -> Path:
    if os.environ.get("ATTNINF_HOME"):
        return Path(os.environ["ATTNINF_HOME"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(xdg) / "attninf"


def models_dir() -> Path:
    return home() / "models"
