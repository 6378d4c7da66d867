"""`attninf export`: a mixture as token-id shards other trainers read."""
from __future__ import annotations

import click

from ..errors import user_errors
from ..export import ExportConfig
from ._common import stage_config, stage_options


@click.command("export")
@stage_options(ExportConfig, "export", arguments=("data",))
@click.option("--verify", is_flag=True,
              help="DATA is an export: check every shard against its manifest (sizes, offsets, sha256).")
@user_errors
def export(**kw) -> None:
    """Write a mixture as flat token-id shards: OUT/part-*.bin (uint16 when the
    vocabulary fits, else uint32; each document followed by EOS) with
    OUT/part-*.idx (int64 document offsets) and OUT/manifest.json (tokenizer,
    EOS, counts, sha256). A phased mixture gives OUT/stable/ and OUT/decay/.

    \b
    Read it back with numpy alone:
      tokens = np.memmap("tokens/part-00000-of-00001.bin", dtype=np.uint16)
      idx = np.fromfile("tokens/part-00000-of-00001.idx", dtype=np.int64)
      doc_i = tokens[idx[i]:idx[i + 1]]
    """
    from ..export import run_export
    from ..artifacts import TokenShards

    cfg, own = stage_config(ExportConfig, "export", kw)
    if own["verify"]:
        shards = TokenShards.read(cfg.data)
        shards.verify()
        m = shards.manifest
        click.echo(f"{cfg.data}: ok, {m['documents']:,} documents, {m['tokens']:,} tokens ({m['dtype']}) in "
                   f"{sum(len(s['shards']) for s in shards.phases.values())} shard(s)")
        return
    m = run_export(cfg)
    for name, s in m["phases"].items():
        where = cfg.out if name == "main" else f"{cfg.out}/{name}"
        click.echo(f"{where}: {s['documents']:,} documents, {s['tokens']:,} tokens in {len(s['shards'])} shard(s)")
    click.echo(f"{m['dtype']} token ids, EOS {m['eos_id']} after each document; manifest {cfg.out}/manifest.json")
