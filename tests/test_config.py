"""Options declared once: every field of a stage's config dataclass is an
option of its command (with its help and default), YAML and flags land in the
same dataclass, and an unknown key anywhere is a one-line error."""
import dataclasses

import click
import pytest
from click.testing import CliRunner

from attninf.cli import main
from attninf.config import config_options, load_stage
from attninf.heads import DetectConfig
from attninf.pipelines.mix import MixConfig
from attninf.pipelines.score import ScoreConfig
from attninf.pipelines.select import SelectConfig
from attninf.report import ReportConfig
from attninf.train import TrainConfig
from attninf.export import ExportConfig
from attninf.pipelines.compare import CompareConfig

COMMANDS = [("detect-heads", DetectConfig, ()), ("score", ScoreConfig, ("corpus",)),
            ("select", SelectConfig, ("scores",)), ("mix", MixConfig, ("corpus",)),
            ("report", ReportConfig, ("scores",)), ("train", TrainConfig, ()),
            ("export", ExportConfig, ("data",)), ("compare", CompareConfig, ())]


@pytest.mark.parametrize("command,cls,arguments", COMMANDS, ids=[c[0] for c in COMMANDS])
def test_every_field_is_an_option_with_its_help(command, cls, arguments):
    cmd = main.get_command(click.Context(main), command)
    params = {p.name: p for p in cmd.params}
    for f in dataclasses.fields(cls):
        if not f.metadata.get("cli", True):
            assert f.name not in params
            continue
        assert f.name in params, f"{command}: no option for {cls.__name__}.{f.name}"
        p = params[f.name]
        if f.name in arguments:
            assert isinstance(p, click.Argument)
            continue
        assert p.opts == [f.metadata.get("flag", "--" + f.name.replace("_", "-"))]
        assert p.help.startswith(f.metadata["help"]), f"{f.name}: help not from the dataclass"
        assert p.default is None  # not given = the YAML or the dataclass decides
        if f.default not in (None, False, dataclasses.MISSING) or "default_help" in f.metadata:
            assert "[default: " in p.help
        if "choices" in f.metadata:
            assert list(p.type.choices) == list(f.metadata["choices"])


def _capture(cls, section="train"):
    """A throwaway command built from cls that returns the resolved config."""
    @click.command()
    @click.option("--config", "config_path", default=None)
    @config_options(cls)
    def cmd(config_path, **kw):
        return load_stage(cls, config_path, section, kw)
    return cmd


def test_types_yaml_and_flags_resolve_into_the_dataclass(tmp_path):
    yml = tmp_path / "t.yaml"
    yml.write_text("seed: 7\ntrain:\n  budgets: [10, 20]\n  lr: 0.5\n  total_steps: 40\n")
    cfg = _capture(TrainConfig).main(["--config", str(yml), "--lr", "0.25", "--budgets", "5,15,30"],
                                     standalone_mode=False)
    assert cfg.budgets == [5, 15, 30] and cfg.lr == 0.25  # flags beat the file
    assert cfg.total_steps == 40 and cfg.seed == 7  # the file beats the defaults; shared keys reach the stage
    assert cfg.warmup_steps == TrainConfig().warmup_steps
    cfg = _capture(TrainConfig).main(["--config", str(yml)], standalone_mode=False)
    assert cfg.budgets == [10, 20]
    res = CliRunner().invoke(_capture(TrainConfig), ["--budgets", "5,x"])
    assert res.exit_code == 2 and "comma-separated list of integers" in res.output


def test_yaml_flag_stays_on_without_the_flag(tmp_path):
    yml = tmp_path / "s.yaml"
    yml.write_text("score:\n  truncate: true\n")
    cfg = _capture(ScoreConfig, "score").main(["--config", str(yml)], standalone_mode=False)
    assert cfg.truncate is True
    cfg = _capture(ScoreConfig, "score").main([], standalone_mode=False)
    assert cfg.truncate is False


def test_select_config_file_and_token_budget(tmp_path):
    from helpers import make_scored_corpus

    _, scores = make_scored_corpus(tmp_path, files=2, rows=30)
    yml = tmp_path / "s.yaml"
    yml.write_text("select:\n  frac: 0.5\n")
    res = CliRunner().invoke(main, ["select", str(scores), "--config", str(yml), "--out", str(tmp_path / "s1")])
    assert res.exit_code == 0, res.output
    import json

    m = json.loads((tmp_path / "s1" / "manifest.json").read_text())
    assert m["config"]["frac"] == 0.5 and m["config"]["out"] == str(tmp_path / "s1")
    res = CliRunner().invoke(main, ["select", str(scores), "--config", str(yml), "--tokens", "100",
                                    "--out", str(tmp_path / "s2")])
    assert res.exit_code == 0, res.output
    m = json.loads((tmp_path / "s2" / "manifest.json").read_text())
    assert m["config"]["frac"] is None and m["config"]["tokens"] == 100  # a budget replaces the fraction
    assert all(g["tokens_selected"] <= 100 for g in m["groups"].values())


@pytest.mark.parametrize("body,message", [
    ("detect: {num_probs: 3}", "unknown key 'num_probs' in section detect: did you mean 'num_probes'?"),
    ("score: {max_token: 3}", "unknown key 'max_token' in section score: did you mean 'max_tokens'?"),
    ("select: {fraction: 0.3}", "unknown key 'fraction' in section select: did you mean 'frac'?"),
    ("mix: {seeds: 1}", "unknown key 'seeds' in section mix: did you mean 'seed'?"),
    ("demo_corpus: {docs: 3}", "unknown key 'docs' in section demo_corpus:"),
    ("score: {corpus: elsewhere}", "'corpus' cannot be set in section score: the pipeline sets it"),
    ("mix: {repeat: many}", "'repeat' in section mix must be an integer, got 'many'"),
    ("workdr: w", "unknown key 'workdr' in"),
    ("detect: 3", "section 'detect' must be a mapping"),
])
def test_pipeline_yaml_mistakes_are_one_line(tmp_path, body, message):
    (tmp_path / "corpus").mkdir()
    cfg = tmp_path / "p.yaml"
    cfg.write_text(f"corpus: {tmp_path / 'corpus'}\nworkdir: {tmp_path / 'w'}\n{body}\n")
    res = CliRunner().invoke(main, ["run", str(cfg), "--quiet"])
    assert res.exit_code == 2, res.output
    assert message in res.output and len(res.output.strip().splitlines()) == 1, res.output
    assert not (tmp_path / "w" / "heads.json").exists()  # nothing ran


def test_yaml_float_spellings(tmp_path):
    yml = tmp_path / "t.yaml"
    yml.write_text("train:\n  lr: 3e-3\n  min_lr_ratio: 0\n")  # 3e-3 is a string to YAML 1.1
    cfg = _capture(TrainConfig).main(["--config", str(yml)], standalone_mode=False)
    assert cfg.lr == 0.003 and cfg.min_lr_ratio == 0
    yml.write_text("train:\n  lr: fast\n")
    res = CliRunner().invoke(_capture(TrainConfig), ["--config", str(yml)])
    assert res.exit_code != 0 and "'lr' in the train settings must be a number, got 'fast'" in str(res.exception)
