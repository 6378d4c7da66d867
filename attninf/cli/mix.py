"""`attninf mix`: the training mixture, the corpus plus the selection."""
from __future__ import annotations

import click

from ..errors import user_errors
from ..pipelines.mix import MixConfig
from ._common import stage_config, stage_options


@click.command("mix")
@stage_options(MixConfig, "mix", arguments=("corpus",))
@user_errors
def mix(**kw) -> None:
    """Write the training mixture: the whole corpus plus the selected documents.

    Every corpus row appears once (source=base) and every selected document
    --repeat more times (source=selected), shuffled by --seed, in Parquet
    shards with columns text, id, domain, source. Load it with
    datasets.load_dataset("parquet", data_dir=OUT), streaming or not.

    --phases stable,decay writes OUT/stable (the corpus alone) and OUT/decay
    (selected documents --decay-weight more times) for a schedule whose decay
    phase reads the selection (MiniCPM); `attninf train --data OUT` switches
    between them at the right steps.
    """
    from ..pipelines.mix import run_mix

    cfg, _ = stage_config(MixConfig, "mix", kw)
    m = run_mix(cfg)
    for phase, part in (m.get("parts") or {"": m}).items():
        _print_mix(part, f"{cfg.out}/{phase}".rstrip("/"), phase)
    if m.get("parts"):
        click.echo(f"phased mixture {cfg.out}: train with `attninf train --data {cfg.out}` and a schedule that "
                   "decays (wsd, wsd-s, power)")


def _print_mix(m: dict, out: str, phase: str) -> None:
    if phase:
        click.echo(f"-- {phase} phase")
    click.echo(f"{'domain':<16}{'base rows':>10}{'+selected':>10}{'tokens':>12}{'weight':>8}{'(corpus)':>10}")
    for d, e in m["domains"].items():
        click.echo(f"{d:<16}{e['base_rows']:>10,}{e['selected_rows']:>10,}"
                   f"{e['base_tokens'] + e['selected_tokens']:>12,}{e['weight']:>8.3f}{e['base_weight']:>10.3f}")
    click.echo(f"wrote {out}: {m['rows']:,} rows in {m['shards']} shard(s); manifest {out}/.manifest.json")
