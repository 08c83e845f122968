"""``qcompile inspect``: what would be quantized, at how many bits, and what stays float and why.

Nothing is trained or written: this is the dry run a user reads before spending minutes on ``compile``.
The plan shown is exactly the one ``compile`` builds from the same flags.
"""

from __future__ import annotations

from typing import Any

import click
from rich.console import Console

from qcompile.cli import output as fmt
from qcompile.cli.method_options import MethodOptionsCommand, method_options
from qcompile.cli.options import absolute_spec, given, model_source, quant_options
from qcompile.cli.output import Output, Result, reporting


def build_compiled(source: dict[str, Any], quant: dict[str, Any], data: str | None = None,
                   method_flags: list | None = None, calibration: dict[str, Any] | None = None,
                   norm: dict[str, Any] | None = None):
    """``qcompile.compile`` from the shared CLI option groups (also used by ``compile``); ``method_flags``
    are the methods' own options given, checked against ``--method`` before the model is loaded;
    ``calibration``, the keyword arguments of calibrating with ``data`` (``bn_reestimate_batches``);
    ``norm``, the normalisation options (``--norm`` or ``--mean/--std``)."""
    options = method_options(quant, method_flags or [])
    from qcompile.api import compile as compile_model
    from qcompile.loading import parse_shapes

    return compile_model(
        absolute_spec(source["model"]),
        input_shape=parse_shapes(source["input_shape"]),
        weights=source["weights"],
        leaf_modules=list(source["leaf_modules"]),
        data=absolute_spec(data) if data else None,
        **given(quant),
        **{"normalization" if k == "norm" else k: v for k, v in given(norm or {}).items()},
        **({"method_options": options} if options else {}),
        **(calibration or {}),
    )


@click.command(cls=MethodOptionsCommand)
@model_source
@quant_options
@reporting
def inspect(out: Output, source: dict[str, Any], quant: dict[str, Any], method_flags: list) -> Result:
    """Show quantizable sites (shape, params, MACs, bits), ops left in float, and totals.

    MODEL is 'path/file.py:factory' or 'package.module:attr'. A method's own options (listed under
    it below) are validated here exactly as `compile` would take them.
    """
    report = build_compiled(source, quant, method_flags=method_flags).inspect()
    report["model"] = source["model"]
    report["input_shape"] = source["input_shape"]
    report["quantized_sites"] = sum(1 for s in report["sites"] if s["w_bits"] is not None)
    return Result(report, render_inspect)


def method_options_text(options: dict[str, Any]) -> str:
    """``meta=multifc, hidden=100``: a method's options as they appear in the spec."""
    return ", ".join(f"{k}={v}" for k, v in options.items())


def _bits(value: int | None) -> str:
    return "float" if value is None else str(value)


def _quantizer(site: dict[str, Any]) -> str:
    if site["w_bits"] is None:
        return "—"
    if site.get("group_size"):
        return f"{site['quantizer']}/g{site['group_size']}"
    return f"{site['quantizer']}/{'ch' if site['per_channel'] else 'tensor'}"


def _float_groups(float_ops: list[dict[str, Any]]) -> list[list[str]]:
    """One row per (op, reason): ten BatchNorms with the same story are one line, not ten."""
    groups: dict[tuple[str, str], list[str]] = {}
    for f in float_ops:
        groups.setdefault((f["op"], f["reason"]), []).append(f["name"])
    return [[op, ", ".join(names), reason] for (op, reason), names in groups.items()]


def render_inspect(console: Console, r: dict[str, Any]) -> None:
    spec = r["spec"]
    rows = [[s["name"], f"{s['op']} {'×'.join(map(str, s['weight_shape'] or []))}", fmt.count(s["params"]),
             fmt.count(s["macs"]), "float" if s["w_bits"] is None else f"{s['w_bits']}/{_bits(s['a_bits'])}", _quantizer(s)]
            for s in r["sites"]]
    console.print(fmt.table(
        f"Quantizable sites of {r['model']} at input {r['input_shape']} (method {r['method']})",
        ["site", "layer (weight shape)", "params", "MACs/sample", "W/A bits", "quantizer"], rows, right=(2, 3, 4),
        optional=(5, 1, 3)))
    for s in r["sites"]:  # notes under the table: a column of mostly-empty text would not fit 80 columns
        if s["reason"]:
            console.print(f"  site {s['name']}: {s['reason']}", markup=False)
    if r["float_ops"]:
        console.print(fmt.table("Left in float", ["op", "modules", "why"], _float_groups(r["float_ops"])))
    console.print(fmt.key_values("Totals", [
        ("quantized sites", f"{r['quantized_sites']} of {len(r['sites'])}"),
        ("parameters (conv/linear)", fmt.count(r["total_params"])),
        ("MACs per sample", fmt.count(r["total_macs"])),
        ("spec", f"W{spec['w_bits']}A{_bits(spec['a_bits'])} {spec['quantizer']}, first layer {spec['first_layer']}, "
                 f"last layer {spec['last_layer']}"),
        *([("method options", method_options_text(spec["method_options"]))] if spec.get("method_options") else []),
        ("target", f"{r['target']} ({r['target_reason']})"),
    ]))
