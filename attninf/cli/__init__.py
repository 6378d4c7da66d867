"""The `attninf` command: a thin layer over functions a notebook can call.
One module per command group; the options of a stage command are built from
its config dataclass (attninf/config.py), so a new setting is one field.

    attninf model pull                      # offline default model, once
    attninf detect-heads --out heads.json   # retrieval heads + ablation check
"""
from __future__ import annotations

import logging

import click

from . import agree, compare, detect, explain, export, heads, mix, model, report, run, schedules, score, select, train


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="attninf")
@click.option("-v", "--verbose", is_flag=True, help="Log more (model loading, fallbacks).")
def main(verbose: bool) -> None:
    """Select the pretraining data an LLM learns most from, with a small model's
    retrieval heads (AttentionInfluence, arXiv 2505.07293).

    \b
    Typical run:
      attninf model pull                              # offline default model (SmolLM2-135M-Instruct)
      attninf detect-heads --out heads.json           # find and check the retrieval heads
      attninf heads stability heads.json              # how stable that choice is over the probes
      attninf score corpus/ --heads heads.json --out scores/
      attninf explain --scores scores/ --id ID        # why a document scores what it does
      attninf select scores/ --out selected/          # top 20% per domain
      attninf mix corpus/ --selected selected/ --out mixed/
      attninf report scores/ --selected selected/ --out report/
      attninf train --data mixed/ --out run/          # WSD schedule
      attninf export mixed/ --out tokens/             # token-id shards for other trainers
      attninf compare --scores scores/ --corpus corpus/ --out compare/   # proxy A/B trainings
      attninf agree scores-a/ scores-b/               # do two selectors or settings pick the same data?
    or heads -> score -> select -> mix [-> compare] -> report from one file:
      attninf run configs/demo.yaml

    Every stage command takes --config FILE.yaml (the stage's section of a
    pipeline file); flags override it.
    """
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="attninf: %(message)s")
    if not verbose:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()


for _cmd in (model.model, detect.detect_heads, score.score, explain.explain, select.select, mix.mix,
             report.report, run.run, train.train, compare.compare, export.export, schedules.schedules,
             heads.heads, agree.agree):
    main.add_command(_cmd)
