"""`attninf export`: a mixture as the token files another trainer reads."""
from __future__ import annotations

import click

from ..errors import user_errors
from ..export import ExportConfig
from ._common import stage_config, stage_options


@click.command("export")
@stage_options(ExportConfig, "export", arguments=("data",))
@click.option("--verify", is_flag=True,
              help="DATA is an export: check every file against its manifest (sizes, index, sha256).")
@user_errors
def export(**kw) -> None:
    """Write a mixture as the token files a trainer reads, in its own layout.

    \b
      megatron   <shard>.bin/.idx    Megatron-LM, NeMo, GPT-NeoX: --data-path OUT/<shard>
      datatrove  <shard>.ds(.index)  nanotron (Nanoset), datatrove's DatatroveFolderDataset
      llmc       attninf_{train,val}_NNNNNN.bin   llm.c: -i "OUT/attninf_train_*.bin"
      nanogpt    train.bin, val.bin, meta.pkl     nanoGPT: dataset = the folder's name
      flat       <shard>.bin + int64 offsets .idx numpy.memmap, any loader

    Each document is wrapped in the document separators (SmolLM2:
    <|endoftext|> after it; --eos/--bos to choose). --val-frac holds out
    documents by a hash of their id. A phased mixture gives OUT/stable/ and
    OUT/decay/. OUT/.manifest.json (written last) records the layout,
    tokenizer, separators, counts and sha256 of every file.
    """
    from ..artifacts import TokenShards
    from ..export import run_export

    cfg, own = stage_config(ExportConfig, "export", kw)
    if own["verify"]:
        shards = TokenShards.read(cfg.data)
        shards.verify()
        m = shards.manifest
        n = sum(len(p["files"]) for p in shards.phases.values())
        click.echo(f"{cfg.data}: ok, {m['layout']}, {m['documents']:,} documents, {m['tokens']:,} tokens "
                   f"({m['dtype']}) in {n} file set(s)")
        return
    m = run_export(cfg)
    for name, p in m["phases"].items():
        where = cfg.out if name == "main" else f"{cfg.out}/{name}"
        for split in ("train", "val"):
            es = [e for e in p["files"] if e["split"] == split]
            if es:
                click.echo(f"{where} {split}: {sum(e['documents'] for e in es):,} documents, "
                           f"{sum(e['tokens'] for e in es):,} tokens in {len(es)} file set(s)")
    sep = m["separators"]
    click.echo(f"{m['layout']} layout, {m['dtype']} token ids; each document: "
               f"{' '.join(sep['bos_tokens']) or '-'} <text> {' '.join(sep['eos_tokens']) or '-'}; "
               f"{m['tokens_per_s']:,.0f} tokens/s; manifest {cfg.out}/.manifest.json")
