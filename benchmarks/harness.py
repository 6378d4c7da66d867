"""What the benchmark scripts share: the CPU's name (a table states the CPU
it ran on), a command timed from outside with its peak memory, and the demo
corpus in a work folder."""
from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from pathlib import Path

# runs a command and prints its own peak RSS (the children of this wrapper are that command alone)
PEAK = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
        "print('peak-rss-kib', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(r.returncode)")


def cpu_name() -> str:
    """The CPU model, and whether it has bf16 matmul instructions (what --dtype auto decides by)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")),
                platform.machine())
    return name + (", AVX512-BF16" if "avx512_bf16" in info else "") + (", AMX" if "amx_bf16" in info else "")


def run(cmd: list[str], log: Path) -> dict:
    """Run a command to the end, its output to `log`: its wall time and peak RSS."""
    t0 = time.perf_counter()
    with open(log, "w") as f:
        res = subprocess.run([sys.executable, "-c", PEAK, *cmd], stdout=f, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - t0
    if res.returncode:
        sys.exit(f"{' '.join(cmd)} failed ({res.returncode}); see {log}")
    kib = int(log.read_text().rsplit("peak-rss-kib", 1)[1].split()[0])
    return {"s": seconds, "rss_mib": kib / 1024}


def measure(cmd: list[str], cwd: Path, env: dict) -> tuple[float, float]:
    """(wall seconds, peak RSS in MiB) of one command in a fresh process run
    in `cwd` with `env`, its stdout discarded, read from the kernel's
    accounting of the child (ru_maxrss, KiB)."""
    t0 = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # in the source tree: `python -m` and `-c` put the working directory first on sys.path
        os.chdir(cwd)
        fd = os.open(os.devnull, os.O_WRONLY)
        os.dup2(fd, 1)
        os.execvpe(cmd[0], cmd, env)
    _, status, usage = os.wait4(pid, 0)
    wall = time.perf_counter() - t0
    if status != 0:
        raise SystemExit(f"{' '.join(cmd)} failed (status {status})")
    return wall, usage.ru_maxrss / 1024


def demo_corpus(work: Path, docs_per_domain: int) -> Path:
    """work/corpus: the demo's corpus (two files per domain, seed 0), built once."""
    from attninf.democorpus import build_demo_corpus

    work.mkdir(parents=True, exist_ok=True)
    corpus = work / "corpus"
    if not corpus.exists():
        build_demo_corpus(corpus, docs_per_domain=docs_per_domain, files_per_domain=2, seed=0)
    return corpus
