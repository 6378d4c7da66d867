"""Schedules at hand-checked steps (docs/method.md, "Learning-rate schedules") and against
transformers' get_wsd_schedule at every step."""

import pytest
import torch
from click.testing import CliRunner

from attninf.cli import main
from attninf.errors import AttninfError
from attninf.schedules import (cosine, cyclic_cosine, decay_ends, decay_value, make_scheduler, power, wsd,
                               wsd_s)

P = [0, 0.25, 0.5, 0.75, 1]
TABLE = {
    "linear": [1, 0.75, 0.5, 0.25, 0],
    "cosine": [1, 0.853553, 0.5, 0.146447, 0],
    "1-sqrt": [1, 0.5, 0.292893, 0.133975, 0],
}


@pytest.mark.parametrize("shape", list(TABLE))
def test_decay_shapes_table(shape):
    assert [round(decay_value(p, shape), 6) for p in P] == pytest.approx(TABLE[shape], abs=1e-6)
    # the floor lifts the curve: f (1 - m) + m
    assert decay_value(0.5, shape, 0.2) == pytest.approx(TABLE[shape][2] * 0.8 + 0.2)


def test_inverse_and_exponential():
    assert [decay_value(p, "inverse", 0.1) for p in P] == pytest.approx([1, 0.307692, 0.181818, 0.129032, 0.1],
                                                                       abs=1e-6)
    assert decay_value(0, "exponential", steps_into=5000, half_life=5000) == pytest.approx(0.5)
    assert decay_value(0, "exponential", steps_into=10000, half_life=5000) == pytest.approx(0.25)
    with pytest.raises(AttninfError):
        decay_value(0.5, "inverse", 0.0)


def test_wsd_reference_values():
    steps = [0, 5, 10, 79, 80, 85, 90, 95, 99]
    ref = {"linear": [0, .5, 1, 1, 1, .75, .5, .25, .05], "cosine": [0, .5, 1, 1, 1, .853553, .5, .146447, .006156],
           "1-sqrt": [0, .5, 1, 1, 1, .5, .292893, .133975, .025321]}
    for shape, vals in ref.items():
        got = [wsd(s, total_steps=100, warmup_steps=10, decay_steps=20, decay=shape) for s in steps]
        assert got == pytest.approx(vals, abs=1e-6)


@pytest.mark.parametrize("shape", ["linear", "cosine", "1-sqrt"])
@pytest.mark.parametrize("m", [0.0, 0.1])
def test_wsd_equals_transformers(shape, m):
    from transformers import get_wsd_schedule

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    ref = get_wsd_schedule(opt, num_warmup_steps=10, num_decay_steps=20, num_training_steps=100,
                           decay_type=shape, min_lr_ratio=m)
    for s in range(100):
        theirs = ref.lr_lambdas[0](s)
        ours = wsd(s, total_steps=100, warmup_steps=10, decay_steps=20, decay=shape, min_lr_ratio=m, warmup_from=m)
        assert ours == pytest.approx(theirs, abs=1e-9), (shape, m, s)


def test_wsd_decay_fraction_default_is_ten_percent():
    assert wsd(899, total_steps=1000) == 1.0 and wsd(900, total_steps=1000) == 1.0
    assert wsd(950, total_steps=1000) == pytest.approx(0.5)
    with pytest.raises(AttninfError, match="exceed"):
        wsd(0, total_steps=10, warmup_steps=8, decay_steps=5)


def test_wsd_s_boundaries():
    budgets, frac = [100, 300], 0.1
    assert decay_ends(budgets, frac) == [100, 300]
    assert wsd_s(89, budgets, frac) == 1.0
    assert wsd_s(90, budgets, frac) == 1.0  # p = 0
    assert wsd_s(95, budgets, frac) == pytest.approx(0.5)
    assert wsd_s(99, budgets, frac) == pytest.approx(0.1)
    assert wsd_s(100, budgets, frac) == 1.0  # back to the stable LR after the budget
    assert wsd_s(269, budgets, frac) == 1.0 and wsd_s(270, budgets, frac) == 1.0
    assert wsd_s(285, budgets, frac) == pytest.approx(0.5)
    with pytest.raises(AttninfError, match="previous"):
        decay_ends([100, 105], 0.5)


def test_power_crossover():
    # lr = min(lr_max, batch * a * n^b): the cap holds until batch * a * n^b = lr_max
    lr_max, a, b, batch = 0.02, 4.6, -0.51, 8
    cross = (lr_max / (batch * a)) ** (1 / b)
    assert power(cross * 0.99, lr_max, a, b, batch) == pytest.approx(1.0)
    assert power(cross * 1.01, lr_max, a, b, batch) < 1.0
    assert power(cross * 4, lr_max, a, b, batch) == pytest.approx(4 ** b, rel=1e-9)
    # warmup rises linearly to the curve; the final decay ends at final_ratio of its start
    assert power(50, lr_max, a, b, batch, warmup_tokens=100) == pytest.approx(0.5 * power(100, lr_max, a, b, batch))
    end = power(10**9, lr_max, a, b, batch, decay_tokens=10**8, total_tokens=10**9)
    start = power(9 * 10**8, lr_max, a, b, batch)
    assert end == pytest.approx(0.01 * start)


def test_cosine_baselines():
    assert cosine(10, 110, warmup_steps=10) == 1.0
    assert cosine(60, 110, warmup_steps=10, min_lr_ratio=0.1) == pytest.approx(0.55)
    assert cyclic_cosine(0, 50) == 1.0 and cyclic_cosine(25, 50) == pytest.approx(0.5)
    assert cyclic_cosine(49, 50) < 0.01 and cyclic_cosine(50, 50) == 1.0  # hard restart


def test_lambdalr_follows_the_function():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.5)
    sched = make_scheduler(opt, "wsd", total_steps=40, warmup_steps=4, decay_steps=10, decay="cosine")
    for s in range(40):
        assert opt.param_groups[0]["lr"] == pytest.approx(0.5 * wsd(s, 40, 4, 10, decay="cosine"))
        opt.step()
        sched.step()


def test_show_csv_and_plot(tmp_path):
    res = CliRunner().invoke(main, ["schedules", "show", "--schedule", "wsd", "--total-steps", "100",
                                    "--warmup-steps", "10", "--decay-steps", "20", "--decay", "cosine", "--csv"])
    assert res.exit_code == 0, res.output
    lines = res.output.strip().splitlines()
    assert lines[0] == "step,lr_multiplier" and len(lines) == 101
    assert float(lines[86].split(",")[1]) == pytest.approx(0.853553, abs=1e-6)  # step 85
    res = CliRunner().invoke(main, ["schedules", "plot", "--schedule", "wsd", "--schedule", "cosine",
                                    "--schedule", "wsd-s", "--budgets", "40,100", "--total-steps", "100",
                                    "--warmup-steps", "5", "--decay-steps", "20", "--out", str(tmp_path / "lr.png")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "lr.png").read_bytes()[:4] == b"\x89PNG"


def test_paper_schedule_config_has_the_papers_proportions():
    """configs/train-paper-schedule.yaml: 0.1% warmup, stable to 75%, 25% decay (the paper's 7B run)."""
    from pathlib import Path

    from attninf.config import load_stage
    from attninf.train import TrainConfig

    cfg = load_stage(TrainConfig, Path(__file__).parent.parent / "configs/train-paper-schedule.yaml", "train", {})
    fn, n = cfg.lr_schedule().fn(), cfg.total_steps
    lr = [fn(s) for s in range(n)]
    warm = next(s for s, x in enumerate(lr) if x == 1.0)
    stable_end = max(s for s, x in enumerate(lr) if x == 1.0)
    assert warm == round(0.001 * n)
    assert stable_end == round(0.75 * n)  # the decay's first step (p = 0) is still 1
    assert all(a > b for a, b in zip(lr[stable_end:], lr[stable_end + 1:]))  # then it decays, 25% of the run
