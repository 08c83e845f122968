"""Tables on narrow, non-terminal output: a number is never cut. Text wraps, then the least important
columns are left out (and named), and as a last resort a number folds onto a second line."""

from __future__ import annotations

import json
import re

import pytest
from click.testing import CliRunner
from rich.console import Console

from qcompile.cli import output as fmt
from qcompile.cli.main import cli

MODEL_SOURCE = '''
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder_stage_one_convolution = nn.Conv2d(3, 64, 3, padding=1)
        self.encoder_stage_two_convolution = nn.Conv2d(64, 64, 3, padding=1, bias=False)  # 36,864 weights
        self.classifier_head_projection = nn.Linear(64, 1000)

    def forward(self, x):
        x = self.encoder_stage_two_convolution(self.encoder_stage_one_convolution(x).relu()).relu()
        return self.classifier_head_projection(x.mean((2, 3)))
'''

NUMBER = re.compile(r"\d[\d,]*\d|\d")


@pytest.fixture(scope="module")
def inspect_args(tmp_path_factory) -> list[str]:
    path = tmp_path_factory.mktemp("tables") / "net.py"
    path.write_text(MODEL_SOURCE)
    return ["inspect", f"{path}:Net", "--input-shape", "1,3,32,32"]


@pytest.mark.parametrize("columns", [40, 60, 80])
def test_inspect_prints_every_number_whole_at_any_width(inspect_args, columns):
    report = json.loads(CliRunner().invoke(cli, [*inspect_args, "--json"]).stdout)
    result = CliRunner().invoke(cli, inspect_args, env={"COLUMNS": str(columns)})
    assert result.exit_code == 0, result.stderr
    text = result.stdout
    assert max(len(line) for line in text.splitlines()) <= columns
    tokens = NUMBER.findall(text)
    grouped = {f"{v:,}" for s in report["sites"] for v in (s["params"], s["macs"])}
    grouped |= {f"{report['total_params']:,}", f"{report['total_macs']:,}", report["input_shape"]}
    cut = [t for t in tokens if "," in t and t not in grouped]
    assert not cut, f"numbers cut at {columns} columns: {cut}\n{text}"
    assert "36,864" in tokens
    macs_shown = "not shown" not in text or "MACs/sample" not in " ".join(text.split("not shown")[-1].split())
    for site in report["sites"]:
        assert f"{site['params']:,}" in tokens
        if macs_shown:
            assert f"{site['macs']:,}" in tokens
    for total in (report["total_params"], report["total_macs"]):
        assert f"{total:,}" in tokens


def test_columns_are_left_out_least_important_first_and_named():
    table = fmt.table("t", ["name", "params", "MACs", "note"], [["layer1.0.conv1", "36,864", "115,605,504", "uniform/ch"]],
                      right=(1, 2), optional=(3, 2))
    for width, shown, note in [(80, ["note", "115,605,504"], None), (40, ["115,605,504"], "note"),
                               (30, [], "note, MACs")]:
        console = Console(width=width, record=True, file=open("/dev/null", "w"))
        console.print(table)
        text = console.export_text()
        assert "36,864" in NUMBER.findall(text)
        assert all(s in text for s in shown)
        assert (f"not shown at this width: {note} (widen the output, or use --json)" in " ".join(text.split())) == bool(note)


def test_a_number_folds_rather_than_being_cut_when_nothing_is_left_to_drop():
    console = Console(width=12, record=True, file=open("/dev/null", "w"))
    console.print(fmt.table("t", ["n"], [["123,456,789,012"]], right=(0,)))
    assert "".join(console.export_text().split()).count("123,456,789,012") == 1
