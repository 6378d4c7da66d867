"""`attninf score`'s settings, in a module of their own: the driver
(score.py), the executors and the workers all read them."""
from __future__ import annotations

from dataclasses import dataclass, field

from attninf.devices import DTYPE_HELP, DTYPES
from attninf.pipelines.corpus import DOMAIN_MODES


@dataclass
class ScoreConfig:
    corpus: str = field(default="", metadata={"help": "Folder, URL prefix or glob of .parquet / .jsonl(.gz/.zst) files."})
    out: str = field(default="scores", metadata={
        "help": "Output folder or URL: one scores Parquet per input file + manifest.json."})
    heads: str = field(default="heads.json", metadata={"help": "heads.json from detect-heads."})
    model: str | None = field(default=None, metadata={
        "help": "Model name, directory, .gguf file or hub id.", "default_help": "the one heads.json names"})
    text_column: str = field(default="text", metadata={"help": "Column (JSON Lines: key) holding the document text."})
    id_column: str = field(default="id", metadata={"help": "Id column; absent from a file: ids are "
                                                           "<relative path>:<row>."})
    domain_column: str = field(default="domain", metadata={"help": "Column holding the domain."})
    domain_from: str = field(default="auto", metadata={
        "choices": DOMAIN_MODES,
        "help": "Where each document's domain comes from: the column, the first folder under CORPUS, "
                "none (one global ranking); auto = the column where the corpus has one, else the "
                "folder when CORPUS has several top-level folders."})
    max_tokens: int | None = field(default=None, metadata={
        "help": "Window length; longer documents are scored over several.", "default_help": "min(context, 4096)"})
    context_overlap: int | None = field(default=None, metadata={
        "help": "Tokens of context each later window re-reads before the tokens it scores.",
        "default_help": "half of --max-tokens"})
    doc_prefix: str | None = field(default=None, metadata={
        "metavar": "TOKEN|none", "help": "Token put before every document.",
        "default_help": "the one heads.json's probes used"})
    head_fracs: list[float] | None = field(default=None, metadata={
        "help": "Score several head sets in one pass: for each F, the top F of all heads by heads.json's "
                "retrieval scores. The first set gives `score` (what select, mix and report read); each "
                "other F adds the columns score_topNpct and loss_masked_topNpct (N = 100 F). The layers "
                "below the lowest masked layer run once for all sets.",
        "default_help": "the heads heads.json selected, one set"})
    truncate: bool = field(default=False, metadata={"help": "Score only the first window of long documents."})
    save_token_stats: bool = field(default=False, metadata={
        "help": "Also keep, per document, the share of its loss rise carried by its top 1% of tokens "
                "(top1_share) and the score of each half (score_first_half, score_second_half): finds "
                "documents whose score comes from one copied block."})
    batch_tokens: int | None = field(default=None, metadata={
        "help": "Tokens per packed forward pass (memory vs. speed).", "default_help": "4096 on CPU, 16384 on a GPU"})
    chunk_docs: int | None = field(default=None, metadata={
        "help": "Documents per work unit: the most a crash can lose, the grain that spreads over workers.",
        "default_help": "256 on CPU, 16384 on a GPU (a few minutes of work)"})
    rows_per_chunk: int = field(default=2048, metadata={"help": "Documents read and scored at a time."})
    dtype: str = field(default="auto", metadata={
        "choices": DTYPES, "help": DTYPE_HELP})
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda, cuda:N."})
    workers: int | None = field(default=None, metadata={
        "help": "Local Dask workers; 0 scores in this process (no Dask).", "default_help": "0 (in this process) with at most one GPU, 1 per GPU with several"})
    threads: int | None = field(default=None, metadata={
        "help": "Torch threads per worker on CPU.",
        "default_help": "torch's own (the cores) in this process, the cores / --workers on a local cluster"})
    share_gpus: bool = field(default=False, metadata={"help": "Allow more workers than GPUs."})
    resources: str | None = field(default=None, metadata={
        "metavar": "NAME=N[,...]",
        "help": "Dask worker resources each unit needs, e.g. GPU=1: units go only to workers started "
                "with `dask worker ... --resources GPU=1`."})
    scheduler: str | None = field(default=None, metadata={
        "envvar": "DASK_SCHEDULER_ADDRESS",
        "help": "Use an existing Dask cluster at this address (also $DASK_SCHEDULER_ADDRESS)."})
    overwrite: bool = field(default=False, metadata={
        "help": "Redo scores made with a different model/heads/settings."})
    allow_pickle: bool = field(default=False, metadata={"help": "Allow .bin (pickle) weights; they can run code."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow the model's own Python code."})



def extra_tags(cfg: ScoreConfig) -> list[str]:
    """The tags of the head sets scored beside `score` (their columns: headsets.head_set_columns)."""
    from attninf.headsets import head_set_tag

    return [head_set_tag(float(f)) for f in (cfg.head_fracs or [])[1:]]
