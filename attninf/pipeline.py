"""`attninf run PIPELINE.yaml`: the whole chain, heads -> score -> select ->
mix -> report, from one YAML file.

Each stage has a key: a digest of its own settings and the keys of the stages
it reads. A stage whose key matches the one recorded after its last success
(workdir/.stages/<stage>.json) and whose output exists is skipped; a changed
setting redoes that stage and those after it, nothing before. The score
stage also resumes inside itself (finished files are kept).

    model: smollm2-135m          # shared: model, dtype, device, seed
    workdir: demo-out            # heads.json, scores/, selected/, mixed/, report/ go here
    corpus: demo-out/corpus      # Parquet corpus; with `demo_corpus:` it is built first
    demo_corpus: {docs_per_domain: 50}
    detect: {num_probes: 12, context_tokens: 2048}
    score:  {max_tokens: 512}
    select: {frac: 0.2}
    mix:    {repeat: 1, seed: 0}
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from pathlib import Path
from typing import Any, Callable

from .artifacts import write_json
from .config import read_yaml
from .errors import AttninfError

STAGES = ("corpus", "heads", "score", "select", "mix", "report")
SECTIONS = {"demo_corpus", "detect", "score", "select", "mix", "report"}
TOP = {"model", "dtype", "device", "seed", "workdir", "corpus"}
REPORT_KEYS = {"top"}  # build_report's settings


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def apply_overrides(cfg: dict, sets: list[str]) -> dict:
    """`section.key=value` (value parsed as YAML) or `key=value` for top-level keys."""
    import yaml

    cfg = json.loads(json.dumps(cfg))
    for s in sets:
        if "=" not in s:
            raise AttninfError(f"--set {s!r}: expected section.key=value")
        path, raw = s.split("=", 1)
        value = yaml.safe_load(raw)
        parts = path.split(".")
        node = cfg
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise AttninfError(f"--set {s!r}: {p} is not a section")
        node[parts[-1]] = value
    return cfg


def load_pipeline(path: str | Path, sets: list[str] = ()) -> dict:
    cfg = apply_overrides(read_yaml(path), list(sets))
    unknown = sorted(set(cfg) - TOP - SECTIONS)
    if unknown:
        raise AttninfError(f"{path}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(TOP | SECTIONS))}")
    if "corpus" not in cfg:
        raise AttninfError(f"{path}: `corpus:` (a Parquet directory) is required")
    cfg.setdefault("workdir", "attninf-out")
    return cfg


def _score_config(cfg: dict, corpus: Path, out: Path, heads_path: Path):
    from .pipelines.score import ScoreConfig

    sec = dict(cfg.get("score") or {})
    names = {f.name for f in dataclasses.fields(ScoreConfig)}
    bad = sorted(set(sec) - names) + sorted(k for k in ("corpus", "out", "heads") if k in sec)
    if bad:
        raise AttninfError(f"unknown or fixed score setting(s): {', '.join(bad)}; the pipeline sets corpus, out "
                           f"and heads itself")
    base = {k: cfg[k] for k in ("dtype", "device") if k in cfg}
    # the pipeline owns its workdir: scores made with other settings are redone
    return ScoreConfig(**{"overwrite": True, **base, **sec, "corpus": str(corpus), "out": str(out),
                          "heads": str(heads_path)})


class Runner:
    def __init__(self, cfg: dict, say: Callable[[str], None] = print, progress: bool = True):
        self.cfg = cfg
        self.say = say
        self.progress = progress
        self.work = Path(cfg["workdir"])
        self.stage_dir = self.work / ".stages"
        self.times: dict[str, float] = {}
        self.ran: list[str] = []

    # ----------------------------------------------------------- bookkeeping

    def _done(self, stage: str, key: str, output: Path) -> bool:
        p = self.stage_dir / f"{stage}.json"
        if not p.exists() or not output.exists():
            return False
        try:
            marker = json.loads(p.read_text())
        except (ValueError, OSError):  # empty or truncated: the stage is not known to be done
            return False
        return isinstance(marker, dict) and marker.get("key") == key

    def _mark(self, stage: str, key: str, info: dict | None = None) -> None:
        write_json({"key": key, "finished": time.time(), **(info or {})}, self.stage_dir / f"{stage}.json")

    def _stage(self, stage: str, key: str, output: Path, fn: Callable[[], Any]) -> None:
        if self._done(stage, key, output):
            self.say(f"[{stage}] up to date: {output}")
            return
        self.say(f"[{stage}] running ...")
        t = time.perf_counter()
        info = fn() or {}
        self.times[stage] = round(time.perf_counter() - t, 1)
        self._mark(stage, key, info)
        self.ran.append(stage)
        self.say(f"[{stage}] done in {self.times[stage]:.1f}s: {output}")

    def shared(self) -> dict:
        return {k: self.cfg[k] for k in ("model", "dtype", "device") if k in self.cfg}

    # ----------------------------------------------------------------- run

    def run(self) -> dict:
        from .heads import DetectConfig

        cfg, work = self.cfg, self.work
        work.mkdir(parents=True, exist_ok=True)
        corpus = Path(cfg["corpus"])

        # corpus (demo only): built from offline text when demo_corpus is set
        k_corpus = _digest(["corpus", str(corpus), cfg.get("demo_corpus")])
        if cfg.get("demo_corpus") is not None:
            def build():
                from .democorpus import build_demo_corpus

                import shutil

                if corpus.exists():
                    shutil.rmtree(corpus)
                return {"counts": build_demo_corpus(corpus, **(cfg.get("demo_corpus") or {}))}
            self._stage("corpus", k_corpus, corpus, build)
        elif not corpus.is_dir():
            raise AttninfError(f"corpus directory not found: {corpus}")

        # heads
        det = {**self.shared(), **({"seed": cfg["seed"]} if "seed" in cfg else {}), **(cfg.get("detect") or {})}
        dcfg = DetectConfig(**{k: v for k, v in det.items() if k in {f.name for f in dataclasses.fields(DetectConfig)}})
        heads_path = work / "heads.json"
        k_heads = _digest(["heads", dataclasses.asdict(dcfg)])

        def heads():
            from .heads import run_detect, summary_table

            res = run_detect(dcfg, heads_path, progress=self.progress, say=self.say)
            self.say(summary_table(res))
            return {"heads": res["heads"], "ablation": {k: res["ablation"][k] for k in
                                                        ("no_mask", "selected_masked", "random_masked")}}
        self._stage("heads", k_heads, heads_path, heads)

        # score
        scfg = _score_config(cfg, corpus, work / "scores", heads_path)
        k_score = _digest(["score", k_heads, k_corpus, {k: v for k, v in dataclasses.asdict(scfg).items()
                                                        if k not in ("workers", "scheduler", "overwrite")}])

        def score():
            from .pipelines.score import run_score

            s = run_score(scfg, progress=self.progress, say=self.say)
            if s["failures"]:
                raise AttninfError(f"{len(s['failures'])} file(s) failed to score: {', '.join(s['failures'])}")
            return {"summary": {k: s[k] for k in ("documents", "ok", "tokens", "wall_s", "tokens_per_s")}}
        self._stage("score", k_score, work / "scores" / "manifest.json", score)

        # select
        from .pipelines.select import SelectConfig, ranking_line, run_select

        sel = SelectConfig(scores=str(work / "scores"), out=str(work / "selected"), **(cfg.get("select") or {}))
        k_select = _digest(["select", k_score, dataclasses.asdict(sel)])

        def select():
            m = run_select(sel)
            self.say(ranking_line(m))
            return {"groups": m["groups"], "by": m["by"], "by_why": m["by_why"]}
        self._stage("select", k_select, work / "selected" / "manifest.json", select)

        # mix
        from .pipelines.mix import MixConfig, run_mix

        mix = MixConfig(corpus=str(corpus), selected=str(work / "selected"), out=str(work / "mixed"),
                        **(cfg.get("mix") or {}))
        k_mix = _digest(["mix", k_select, dataclasses.asdict(mix)])

        def do_mix():
            m = run_mix(mix)
            return {"rows": m["rows"], "domains": m["domains"]}
        self._stage("mix", k_mix, work / "mixed" / ".manifest.json", do_mix)

        # report
        rep = dict(cfg.get("report") or {})
        unknown = sorted(set(rep) - REPORT_KEYS)
        if unknown:
            raise AttninfError(f"unknown report setting(s): {', '.join(unknown)}; known: {', '.join(sorted(REPORT_KEYS))}")
        k_report = _digest(["report", k_select, rep])

        def report():
            from .report import build_report

            return {"page": str(build_report(work / "scores", work / "report", work / "selected", **rep))}
        self._stage("report", k_report, work / "report" / "index.html", report)
        return {"ran": self.ran, "times": self.times, "report": str((work / "report" / "index.html").resolve())}
