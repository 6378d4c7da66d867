"""benchmarks/gpu_check.py, the one script a GPU session runs, kept working
where there is no GPU: its --smoke mode runs every section on tiny shapes on
the CPU under the Triton interpreter."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.heavy
def test_gpu_check_smoke_runs_every_section(tmp_path):
    out = tmp_path / "results.md"
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--smoke", "--out", str(out)],
                         capture_output=True, text=True, timeout=600, env={**os.environ, "TRITON_INTERPRET": "1"})
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    text = out.read_text()
    for title in ("### 2. Correctness", "### 3. masked_attention vs SDPA", "### 4. token_nll",
                  "### 5. The scorer end to end", "### 6. bf16 against fp32", "### 7. `attninf train`"):
        assert title in text
    assert "### Summary" in text and "**over" not in text  # every correctness row within its bound
    assert "| tiny (smoke) | shared prefix |" in text  # the scorer took the fast path
