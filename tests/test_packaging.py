"""The package as users install it: a real (non-editable) wheel, with
kernels/ and pipelines/ mapped inside the attninf namespace, and a core that
imports without dask."""
import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.heavy
def test_wheel_layout_and_import(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(tmp_path / "dist")], check=True, cwd=tmp_path)
    wheel = next((tmp_path / "dist").glob("attninf-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "attninf/kernels/__init__.py" in names and "attninf/pipelines/__init__.py" in names
    assert "attninf/data/probe_sentences.txt" in names
    tops = {n.split("/")[0] for n in names}
    assert "kernels" not in tops and "pipelines" not in tops, tops

    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True)
    # -S: no site hooks, so the repository's editable install cannot shadow the wheel
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(target), sysconfig.get_paths()["purelib"]])}
    code = (
        "import sys, attninf, attninf.kernels, attninf.pipelines, attninf.probes, attninf.cli\n"
        "assert 'dask' not in sys.modules and 'distributed' not in sys.modules, 'core imported dask'\n"
        "assert attninf.kernels.__file__.startswith(sys.argv[1]), attninf.kernels.__file__\n"
        "print(len(attninf.probes.sentences()))\n"
    )
    out = subprocess.run([sys.executable, "-S", "-c", code, str(target)], env=env, cwd=tmp_path,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout) > 1000


@pytest.mark.parametrize("module", ["attninf", "attninf.cli"])
def test_import_is_light(module):
    """`import attninf` and `attninf --help` load no torch, dask, triton or transformers."""
    code = (f"import sys, {module}; "
            "print(' '.join(m for m in ('torch', 'dask', 'triton', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
