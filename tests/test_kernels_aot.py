"""The production Triton kernels, compiled ahead of time for GPUs this
machine does not have (kernels/aot.py: the launchers' own launches, bound by
the JIT's own binder, ptxas from Triton's wheel): they compile, fit the
target's shared memory, and spill no register. The compiles run in a
subprocess without the interpreter, which conftest sets for this process."""
import json
import os
import subprocess
import sys

import pytest

from attninf.kernels import aot


def _python(*args, timeout=600):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_DEFAULT_FP_FUSION"] = "1"
    return subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=timeout)


def _aot(*flags):
    res = _python("-m", "attninf.kernels.aot", "--json", *flags)
    rows = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
    return res, rows


def _check(res, rows, cases, targets):
    assert {(r["case"], r["target"]) for r in rows} == {(c.label, t) for c in cases for t in targets}, res.stderr[-2000:]
    for r in rows:
        assert not r["problems"], (r["case"], r["target"], r["problems"], r.get("per_pass"))
        assert 0 < r["registers"] <= (512 if r["target"] == "gfx942" else 255)
        assert 0 < r["shared"] <= aot.SHARED_LIMIT[r["target"]]
    assert res.returncode == 0, res.stderr[-2000:]


@pytest.mark.heavy  # ~15 s of compiling in a subprocess: make test runs it, make test-fast does not
def test_production_kernels_compile_for_sm80_and_sm90_without_spills():
    """bf16 attention at head dims 64 and 128 (both passes: softmax heads and
    masked heads, packed documents) and the fused loss, as the scorer launches them."""
    res, rows = _aot()
    _check(res, rows, aot.production_cases(), ["sm_80", "sm_90"])
    passes = {r["case"]: r["passes"] for r in rows}
    assert passes["attention D=64 bfloat16"] == 2 and passes["nll H=576 bfloat16"] == 1


@pytest.mark.heavy
def test_every_kernel_config_compiles_for_every_target():
    """fp16, head dim 256, the loss in fp32, and AMD's gfx942 as well."""
    res, rows = _aot("--full")
    _check(res, rows, aot.production_cases(full=True), list(aot.TARGETS))


@pytest.mark.heavy
def test_the_check_sees_a_spill_when_there_is_one():
    """The same attention launch with the 4-warp tiles the launcher used to
    pick for head dim 128 spills on sm_80: the harness must say so."""
    code = (
        "import torch\n"
        "from attninf.kernels import aot\n"
        "from attninf.kernels.attention_triton import _masked_attention_kernel, launches\n"
        "q = torch.zeros(1, 9, 512, 128, dtype=torch.bfloat16); k = torch.zeros(1, 3, 512, 128, dtype=torch.bfloat16)\n"
        "_, runs = launches(q, k, k.clone(), gpu=True)\n"
        "grid, args, kw = runs[0]\n"
        "kw = {**kw, 'BLOCK_M': 128, 'BLOCK_N': 64, 'num_warps': 4, 'num_stages': 2}\n"
        "print(aot.compile_launch(_masked_attention_kernel, args, kw, 'sm_80'))\n")
    res = _python("-c", code)
    assert res.returncode == 0, res.stderr[-2000:]
    nums = eval(res.stdout.strip().splitlines()[-1])  # a dict literal this test printed
    assert nums["registers"] == 255 and nums["spill_stores"] > 0 and nums["spill_loads"] > 0
    row = {"target": "sm_80", **nums}
    assert aot.problems(row) == [f"register spills: {nums['spill_stores']} B stored, {nums['spill_loads']} B loaded "
                                 "per thread"]


def test_problems_name_each_failure():
    ok = {"target": "sm_90", "shared": 1000, "spill_stores": 0, "spill_loads": 0}
    assert aot.problems(ok) == []
    assert aot.problems({**ok, "shared": 300 * 1024})[0].startswith("shared memory 307,200 B > the 232,448 B")
    assert aot.problems({"error": "PTXASError: ..."}) == ["PTXASError: ..."]
    log = ("ptxas info    : Compiling entry function 'k' for 'sm_90a'\n"
           "ptxas info    : Function properties for k\n"
           "    8 bytes stack frame, 12 bytes spill stores, 16 bytes spill loads\n"
           "ptxas info    : Used 168 registers, used 1 barriers, 8 bytes cumulative stack size\n")
    assert aot._ptxas_numbers(log) == {"registers": 168, "spill_stores": 12, "spill_loads": 16}


@pytest.mark.heavy  # a subprocess
def test_aot_refuses_the_interpreter():
    res = subprocess.run([sys.executable, "-m", "attninf.kernels.aot"], capture_output=True, text=True,
                         env={**os.environ, "TRITON_INTERPRET": "1"}, timeout=120)
    assert res.returncode == 2 and "unset TRITON_INTERPRET" in res.stderr
