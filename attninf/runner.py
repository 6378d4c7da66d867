"""`attninf run PIPELINE.yaml`: the whole chain, heads -> score -> select ->
mix [-> compare] -> report, from one YAML file.

Each stage has a key (attninf.identity): a digest of its own settings and
of what it reads, by content: the corpus's file signature, the model's
fingerprint, the manifest of each stage output it reads. A stage whose key
matches the one recorded after its last success (workdir/.stages/<stage>.json)
and whose output exists is skipped. A changed setting or input redoes that
stage, and the stages after it see a new output; nothing before is redone.
The score stage also resumes inside itself (files scored from the same
corpus file are kept, a changed or new file is scored, a removed one's
scores are dropped). The YAML's top-level model, dtype, device and seed reach
every stage whose config has that field, as with `--config`
(attninf.config.stage_values).

    model: smollm2-135m          # shared: model, dtype, device, seed
    workdir: demo-out            # heads.json, scores/, selected/, mixed/, report/ go here
    corpus: demo-out/corpus      # Parquet corpus; with `demo_corpus:` it is built first
    demo_corpus: {docs_per_domain: 50}
    detect: {num_probes: 12, context_tokens: 2048}
    score:  {max_tokens: 512}
    select: {frac: 0.2}
    mix:    {repeat: 1, seed: 0}
    compare: {seeds: 3, total_steps: 200}   # optional: proxy trainings, linked from the report
"""
from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from . import identity
from .artifacts import COMPARE_SUMMARY, MANIFEST, MIX_MANIFEST
from .corpus import corpus_key
from .storage import write_json
from .config import from_mapping, read_yaml, stage_values, unknown_key
from .errors import AttninfError
from .paths import shown

SECTIONS = ("demo_corpus", "detect", "score", "select", "mix", "compare", "report")
TOP = ("model", "dtype", "device", "seed", "workdir", "corpus")


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
    for key in cfg:
        if key not in TOP and key not in SECTIONS:
            raise unknown_key(key, str(path), (*TOP, *SECTIONS))
    for sect in SECTIONS:
        if cfg.get(sect) is not None and not isinstance(cfg[sect], dict):
            raise AttninfError(f"{path}: section {sect!r} must be a mapping")
    if "corpus" not in cfg:
        raise AttninfError(f"{path}: `corpus:` (a Parquet directory) is required")
    cfg.setdefault("workdir", "attninf-out")
    return cfg


@dataclass
class Stage:
    """One step of the chain: its settings, what it reads (named inputs, each
    keyed by content when the stage is about to run), the output that exists
    once it is done, and the work itself (which returns what the stage's
    marker records)."""

    name: str
    settings: Any  # what decides the output: a config dataclass or a mapping
    inputs: dict[str, Callable[[], Any]]  # input name -> its content key, computed when asked
    output: Path
    run: Callable[[], dict | None]
    not_in_key: tuple[str, ...] = field(default=())  # settings that change how, not what

    def key(self) -> str:
        """A digest of this stage's settings and of the content of what it reads."""
        inputs = {name: key() for name, key in sorted(self.inputs.items())}
        return identity.digest([self.name, identity.settings_of(self.settings, self.not_in_key), inputs])


class Runner:
    """Runs the stages in order; a stage whose key and output match its
    marker (workdir/.stages/<stage>.json) is skipped."""

    def __init__(self, cfg: dict, say: Callable[[str], None] = print, progress: bool = True):
        self.cfg = cfg
        self.say = say
        self.progress = progress
        self.work = Path(cfg["workdir"])
        self.corpus = Path(cfg["corpus"])
        self.stage_dir = self.work / ".stages"
        self.times: dict[str, float] = {}
        self._corpus: str | None = None  # the corpus key, until a stage runs
        self.ran: list[str] = []

    def run(self) -> dict:
        self.work.mkdir(parents=True, exist_ok=True)
        for stage in self.stages():  # each key is taken after the stages before it ran
            self._run_stage(stage, stage.key())
        page = self.work / "report" / "index.html"
        return {"ran": self.ran, "times": self.times, "report": shown(page)}

    # ----------------------------------------------------------- bookkeeping

    def _output_key(self, stage: Stage) -> str | None:
        """The stage's output as it is now: a manifest or file by its bytes, the corpus by its signature."""
        if stage.output == self.corpus:  # the corpus stage writes the corpus: keyed by its signature
            return self._corpus_key()
        return identity.file_key(stage.output)

    def _done(self, stage: Stage, key: str) -> bool:
        """The marker holds this key and the output is the one the stage wrote
        (not rewritten since, e.g. by a command run by hand into the workdir)."""
        p = self.stage_dir / f"{stage.name}.json"
        if not p.exists() or not stage.output.exists():
            return False
        try:
            marker = json.loads(p.read_text())
        except (ValueError, OSError):  # empty or truncated: the stage is not known to be done
            return False
        return (isinstance(marker, dict) and marker.get("key") == key
                and marker.get("output") == self._output_key(stage))

    def _run_stage(self, stage: Stage, key: str) -> None:
        if self._done(stage, key):
            self.say(f"[{stage.name}] up to date: {stage.output}")
            return
        self.say(f"[{stage.name}] running ...")
        t = time.perf_counter()
        info = stage.run() or {}
        self._corpus = None  # a stage that ran may have written the corpus (the demo's corpus stage)
        self.times[stage.name] = round(time.perf_counter() - t, 1)
        write_json({"key": key, "output": self._output_key(stage), "finished": time.time(), **info},
                   self.stage_dir / f"{stage.name}.json")
        self.ran.append(stage.name)
        self.say(f"[{stage.name}] done in {self.times[stage.name]:.1f}s: {stage.output}")

    # ---------------------------------------------------------------- stages

    def settings(self, cls, name: str, fixed: dict | None = None, base: dict | None = None):
        """cls from the file's shared keys and section `name` (config.stage_values,
        the rule `--config` follows), over `base`, with `fixed` set by the pipeline."""
        fixed = fixed or {}
        values = {**(base or {}), **stage_values(cls, self.cfg, name, fixed=tuple(fixed))}
        return from_mapping(cls, values, f"section {name}", fixed=fixed)

    # what stages read, keyed by content (attninf.identity)
    def _corpus_key(self):
        """The corpus signature's key, read once between two stages that ran
        (up to five stages read the corpus; only the corpus stage writes it)."""
        if self._corpus is None:
            self._corpus = corpus_key(self.corpus)
        return self._corpus

    @staticmethod
    def _output(path: Path):
        return lambda: identity.output_key(path)

    def stages(self) -> list[Stage]:
        """corpus (only with demo_corpus:) -> heads -> score -> select -> mix
        [-> compare, only with compare:] -> report."""
        if self.cfg.get("demo_corpus") is None and not self.corpus.is_dir():
            raise AttninfError(f"corpus directory not found: {self.corpus}")
        heads, scores = self.work / "heads.json", self.work / "scores"
        selected, mixed, report = self.work / "selected", self.work / "mixed", self.work / "report"
        built = [self._corpus_stage()] if self.cfg.get("demo_corpus") is not None else []
        compare = self.work / "compare" if self.cfg.get("compare") is not None else None
        return built + [self._heads_stage(heads), self._score_stage(heads, scores),
                        self._select_stage(scores, selected), self._mix_stage(selected, mixed)] + \
            ([self._compare_stage(scores, compare)] if compare else []) + \
            [self._report_stage(scores, selected, report, compare)]

    def _corpus_stage(self) -> Stage:
        from .democorpus import DemoCorpusConfig, build_demo_corpus

        dc = self.settings(DemoCorpusConfig, "demo_corpus")

        def build():
            import shutil

            if self.corpus.exists():
                shutil.rmtree(self.corpus)
            return {"counts": build_demo_corpus(self.corpus, **dataclasses.asdict(dc))}
        return Stage("corpus", {"path": str(self.corpus), **dataclasses.asdict(dc)}, {}, self.corpus, build)

    def _heads_stage(self, heads: Path) -> Stage:
        from .heads import DetectConfig

        dcfg = self.settings(DetectConfig, "detect")

        def detect():
            from .heads import run_detect, summary_table

            res = run_detect(dcfg, heads, progress=self.progress, say=self.say)
            self.say(summary_table(res))
            return {"heads": res["heads"], "ablation": {k: res["ablation"][k] for k in
                                                        ("no_mask", "selected_masked", "random_masked")}}
        from .artifacts import HEADS_VERSION
        from .model import model_key

        # the code's version too: an upgrade that changes what detect-heads finds redoes it
        return Stage("heads", dcfg, {"model": lambda: model_key(dcfg.model), "version": lambda: HEADS_VERSION},
                     heads, detect)

    def _score_stage(self, heads: Path, scores: Path) -> Stage:
        from .pipelines.score import ScoreConfig

        # the pipeline owns its workdir: scores made with other settings are redone
        scfg = self.settings(ScoreConfig, "score", base={"overwrite": True},
                             fixed={"corpus": str(self.corpus), "out": str(scores), "heads": str(heads)})

        def score():
            from .pipelines.score import run_score

            s = run_score(scfg, progress=self.progress, say=self.say)
            if s["failures"]:
                raise AttninfError(f"{len(s['failures'])} file(s) failed to score: {', '.join(s['failures'])}")
            return {"summary": {k: s[k] for k in ("documents", "ok", "tokens", "wall_s", "tokens_per_s")}}
        from .identity import SCORING_VERSION

        return Stage("score", scfg, {"corpus": self._corpus_key, "heads": lambda: identity.file_key(heads),
                                     "version": lambda: SCORING_VERSION},
                     scores / MANIFEST, score, not_in_key=("workers", "scheduler", "overwrite", "threads"))

    def _select_stage(self, scores: Path, selected: Path) -> Stage:
        from .pipelines.select import SelectConfig

        sel = self.settings(SelectConfig, "select", fixed={"scores": str(scores), "out": str(selected)})

        def select():
            from .pipelines.select import ranking_line, run_select

            m = run_select(sel)
            self.say(ranking_line(m))
            return {"groups": m["groups"], "by": m["by"], "by_why": m["by_why"]}
        return Stage("select", sel, {"scores": self._output(scores / MANIFEST)}, selected / MANIFEST, select)

    def _mix_stage(self, selected: Path, mixed: Path) -> Stage:
        from .pipelines.mix import MixConfig

        mix = self.settings(MixConfig, "mix",
                            fixed={"corpus": str(self.corpus), "selected": str(selected), "out": str(mixed)})

        def do_mix():
            from .pipelines.mix import run_mix

            m = run_mix(mix)
            return {"rows": m["rows"],
                    "domains": m.get("domains") or {p: v["domains"] for p, v in m.get("parts", {}).items()}}
        return Stage("mix", mix, {"corpus": self._corpus_key, "selected": self._output(selected / MANIFEST)},
                     mixed / MIX_MANIFEST, do_mix)

    def _compare_stage(self, scores: Path, compare: Path) -> Stage:
        from .pipelines.compare import CompareConfig

        ccfg = self.settings(CompareConfig, "compare",
                             fixed={"scores": str(scores), "corpus": str(self.corpus), "out": str(compare)})

        def do_compare():
            from .pipelines.compare import run_compare

            summary = run_compare(ccfg, progress=self.progress, say=self.say)
            if summary is None:
                raise AttninfError("compare stopped before the end: run the pipeline again to go on")
            return {"arms": summary["arms"], "page": str(compare / "index.html")}
        # compare keys each of its runs on what makes it, and skips those already done; this stage's key
        # holds what its settings do not: the runs' model config, tokenizer and separators by content
        return Stage("compare", ccfg, {"corpus": self._corpus_key, "scores": self._output(scores / MANIFEST),
                                       "training": lambda: identity.digest(ccfg.reads())},
                     compare / COMPARE_SUMMARY, do_compare, not_in_key=("device", "max_steps_this_run"))

    def _report_stage(self, scores: Path, selected: Path, report: Path, compare: Path | None = None) -> Stage:
        from .report import ReportConfig

        fixed = {"scores": str(scores), "out": str(report), "selected": str(selected)}
        if compare is not None:
            fixed["compare"] = str(compare)
        rep = self.settings(ReportConfig, "report", fixed=fixed)

        def do_report():
            from .report import run_report

            return {"page": str(run_report(rep))}
        inputs = {"corpus": self._corpus_key,  # the excerpts and token maps
                  "scores": self._output(scores / MANIFEST), "selected": self._output(selected / MANIFEST)}
        if compare is not None:
            inputs["compare"] = self._output(compare / COMPARE_SUMMARY)
        return Stage("report", rep, inputs, report / "index.html", do_report)
