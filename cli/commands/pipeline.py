"""``qcompile compile``, ``finetune`` and ``export``: the steps that build an artifact, chained by a run dir.

``compile`` does the whole job (trace → quantize → calibrate → finetune → export) and saves the
quantized model in a run directory (``runs/<out stem>`` by default); ``finetune RUN_DIR`` continues
training it and ``export RUN_DIR`` writes ONNX from it, so a long job can be split, resumed and
re-exported without re-tracing by hand. Every summary reports the two numbers that decide whether an
artifact is good: the quantized accuracy in PyTorch and the same in onnxruntime (they must match).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.console import Console

from qcompile.cli import output as fmt
from qcompile.cli.commands.inspection import build_compiled, method_options_text
from qcompile.cli.commands.runtime import size_summary
from qcompile.cli.method_options import MethodOptionsCommand
from qcompile.cli.options import absolute_spec, data_option, given, model_source, out_option, quant_options, train_options
from qcompile.cli.output import Output, Result, reporting

CHECKPOINTS = "checkpoints"
DEFAULT_DATA = "digits"  # compile's data when neither the user nor the method gives any: needs no files

run_dir_argument = click.argument("run_dir", metavar="RUN_DIR",
                                  type=click.Path(exists=True, file_okay=False, path_type=Path))


# ----------------------------------------------------------------------------- shared steps
def training_options(train: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """``(finetune kwargs, resume)`` from the ``train`` group, checked before any slow work starts."""
    from qcompile.errors import ConfigError

    options = given(train)
    resume = options.pop("resume", False)
    if options["epochs"] == 0 and resume:
        raise ConfigError("--resume needs training", hint="drop --resume, or pass --epochs N (N >= 1)")
    return options, resume


def run_training(cm, train: dict[str, Any], run_dir: Path, out: Output) -> tuple[dict[str, Any] | None, list[dict]]:
    """Finetune ``cm`` with the ``train`` option group; checkpoints in ``run_dir``.

    Returns the summary (None for ``--epochs 0``) and the method's per-step records (e.g. a meta-network's
    loss), which the summary only condenses and :func:`save_records` keeps whole.
    """
    from qcompile.report import summarise_steps

    options, resume = training_options(train)
    if options["epochs"] == 0:
        return None, []
    out.log(f"finetuning for {options['epochs']} epoch(s); checkpoints in {run_dir / CHECKPOINTS}")
    result = cm.finetune(checkpoint_dir=run_dir / CHECKPOINTS, resume=resume, progress=out.progress, **options)
    summary = {"epochs": options["epochs"], "steps": result.steps, "seconds": result.seconds,
               "completed": result.completed, "final_test": result.final_test,
               "final_test_acc": result.final_test_acc, "history": result.history,
               "extra_metrics": summarise_steps(result.step_records)}
    return summary, result.step_records


def save_records(cm, run_dir: Path, step_records: list[dict], *, resume: bool, previous: list[dict],
                 model_spec: str | None = None) -> None:
    """``save_run``, then ``history.json`` again with the per-step records of every training call so far
    (``previous``: those already in the run dir; see :func:`qcompile.report.merge_steps`)."""
    from qcompile.report import merge_steps
    from qcompile.run_dir import run_label, save_run, write_history

    save_run(cm, run_dir, model_spec)
    if step_records or previous:
        write_history(run_dir, cm.history, label=run_label(cm),
                      steps=merge_steps(previous, step_records, resume))


def export_artifacts(cm, out_path: Path, float_out: Path | None, out: Output) -> dict[str, Any]:
    """Write the packed ONNX (and optionally the fp32 reference), then measure and check them in ORT.

    The data is loaded first: the artifact records its normalisation and class names."""
    from qcompile.parity import compare_onnx

    splits = ensure_data(cm)
    out.log(f"exporting {out_path}")
    report = cm.export(out_path)
    result: dict[str, Any] = {"out": out_path, "opset": report.opset, "onnx_passes": report.onnx_passes,
                              "size": size_summary(out_path), "task": cm.task.name}
    if float_out is not None:
        out.log(f"exporting fp32 reference {float_out}")
        cm.export_float(float_out)
        result["float_out"] = float_out
        result["float_size"] = size_summary(float_out)
    if splits is not None:
        out.log(f"checking {out_path} in onnxruntime on {len(splits.test)} test samples")
        result["parity"] = compare_onnx(cm.graph_module, out_path, splits.test, splits.mean, splits.std, task=cm.task)
    return result


def ensure_data(cm, spec: str | None = None, default: str | None = None):
    """The run's dataset: ``spec`` when given, else the one it was compiled with or the method's own
    (see ``CompiledModel.load_data``), else ``default``; None if none of them."""
    if spec is not None:
        spec = absolute_spec(spec)
        cm.data, cm.data_spec = cm.load_data(spec), spec
    elif cm.data is None:
        cm.data = cm.load_data(cm.data_spec)
        if cm.data is None and default is not None:
            cm.data, cm.data_spec = cm.load_data(default), default
    return cm.data


def accuracies(cm) -> dict[str, Any]:
    """Float and quantized test accuracy in PyTorch."""
    return {"float": cm.evaluate(model=cm.float_model), "quantized_torch": cm.evaluate(),
            "test_samples": len(cm.data.test)}


def check_out_path(out_path: Path) -> None:
    """Refuse an output name that is not a ``.onnx`` file before any slow work starts."""
    from qcompile.errors import ConfigError

    if out_path.suffix.lower() != ".onnx":
        raise ConfigError(f"output {out_path} does not end in .onnx", hint="name the artifact e.g. model-w4a8.onnx")
    if out_path.is_dir():
        raise ConfigError(f"output {out_path} is a directory", hint="pass a file name, e.g. out/model.onnx")


# ----------------------------------------------------------------------------- commands
@click.command("compile", cls=MethodOptionsCommand)
@model_source
@quant_options
@data_option(required=False,
             help="Data for calibration and finetuning; its test split scores the result. Without it: the method's own "
                  f"data if it provides any, else scikit-learn's bundled {DEFAULT_DATA} (1×8×8), which needs no files.")
@train_options(min_epochs=0)
@click.option("--run-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where to save the run for `finetune`/`export` [default: runs/<out stem>].")
@out_option(required=True, help="Packed low-bit ONNX file to write.")
@click.option("--float-out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the fp32 ONNX of the original model (the size/latency reference).")
@reporting
def compile_command(out: Output, source: dict, quant: dict, data: str | None, train: dict, run_dir: Path | None,
                    out_path: Path, float_out: Path | None, method_flags: list) -> Result:
    """Trace, quantize, calibrate, finetune and export MODEL to packed low-bit ONNX.

    MODEL is 'path/file.py:factory' or 'package.module:attr'. --epochs 0 calibrates only (PTQ).
    A --method takes its own options (listed under it below); its per-step metrics go to
    RUN_DIR/history.json.
    """
    for path in (out_path, float_out):
        if path is not None:
            check_out_path(path)
    training_options(train)
    run_dir = run_dir or Path("runs") / out_path.stem
    out.log(f"tracing {source['model']} and inserting quantizers")
    calibration = given({"bn_reestimate_batches": train["bn_reestimate_batches"]})
    cm = build_compiled(source, quant, data, method_flags, calibration)
    if data is None:  # the method's own data, else the default; calibrated as `--data` would be
        ensure_data(cm, default=DEFAULT_DATA)
        cm.calibrate(**calibration)
    training, step_records = run_training(cm, train, run_dir, out)
    save_records(cm, run_dir, step_records, resume=train["resume"], previous=[],
                 model_spec=absolute_spec(source["model"]))
    summary = {"model": source["model"], "run_dir": run_dir, "spec": cm.plan.spec.to_dict(),
               "sites": [{"name": s.name, "op": s.op, "w_bits": s.w_bits, "a_bits": s.a_bits} for s in cm.plan.sites],
               "accuracy": accuracies(cm), "training": training,
               **export_artifacts(cm, out_path, float_out, out)}
    return Result(summary, render_summary)


@click.command()
@run_dir_argument
@data_option(required=False, help="Training data [default: the data the run was compiled with].")
@train_options(min_epochs=1)
@reporting
def finetune(out: Output, run_dir: Path, data: str | None, train: dict) -> Result:
    """Continue training the quantized model saved in RUN_DIR (by `compile`), and save it back.

    The method and its options are the ones the run was compiled with. RUN_DIR names the model file
    it was compiled from, which is imported (run) again: treat run directories as code.
    """
    from qcompile.report import HISTORY, read_run
    from qcompile.run_dir import load_run

    cm = load_run(run_dir)
    previous = read_run(run_dir).steps if (run_dir / HISTORY).is_file() else []
    ensure_data(cm, data)
    before = cm.evaluate()
    training, step_records = run_training(cm, train, run_dir, out)
    save_records(cm, run_dir, step_records, resume=train["resume"], previous=previous)
    summary = {"run_dir": run_dir, "spec": cm.plan.spec.to_dict(), "accuracy_before": before,
               "accuracy": accuracies(cm), "training": training}
    return Result(summary, render_summary)


@click.command()
@run_dir_argument
@out_option(required=True, help="ONNX file to write.")
@click.option("--float", "as_float", is_flag=True, help="Write the fp32 reference of the original model instead.")
@reporting
def export(out: Output, run_dir: Path, out_path: Path, as_float: bool) -> Result:
    """Export the model saved in RUN_DIR to ONNX (packed low-bit, or fp32 with --float).

    RUN_DIR names the model file it was compiled from, which is imported (run) again: treat run
    directories as code.
    """
    from qcompile.run_dir import load_run

    check_out_path(out_path)
    cm = load_run(run_dir)
    if as_float:
        cm.export_float(out_path)
        return Result({"run_dir": run_dir, "out": out_path, "float": True, "size": size_summary(out_path)}, render_summary)
    summary = {"run_dir": run_dir, "float": False, **export_artifacts(cm, out_path, None, out)}
    return Result(summary, render_summary)


# ----------------------------------------------------------------------------- rendering
def render_summary(console: Console, r: dict[str, Any]) -> None:
    """One table for whichever of compile / finetune / export produced ``r``."""
    pairs: list[tuple[str, Any]] = []
    if "spec" in r:
        s = r["spec"]
        a_bits = "float" if s["a_bits"] is None else s["a_bits"]
        pairs.append(("quantization", f"{s['method']}: W{s['w_bits']} A{a_bits}, {s['quantizer']}"))
        if s.get("method_options"):
            pairs.append(("method options", method_options_text(s["method_options"])))
    if r.get("training"):
        t = r["training"]
        pairs.append(("training", f"{t['epochs']} epoch(s), {t['steps']} steps, {t['seconds']:.1f}s"))
        for name, m in t.get("extra_metrics", {}).items():
            pairs.append((f"  {name}", f"{m['first']:.4g} → {m['last']:.4g} (min {m['min']:.4g}, max {m['max']:.4g})"))
    elif "training" in r:
        pairs.append(("training", "none (calibration only)"))
    acc = r.get("accuracy")
    if acc:
        pairs.append(("float accuracy (PyTorch)", fmt.pct(acc["float"])))
        if "accuracy_before" in r:
            pairs.append(("quantized accuracy before", fmt.pct(r["accuracy_before"])))
        pairs.append(("quantized accuracy (PyTorch)", fmt.pct(acc["quantized_torch"])))
    if "parity" in r:
        from qcompile.runtime.tasks import get_runtime_task

        pairs += get_runtime_task(r["task"]).parity_rows(r["parity"])
    for key, label in (("size", "ONNX"), ("float_size", "fp32 ONNX")):
        if key in r:
            pairs.append((f"{label} file", f"{r['float_out' if key == 'float_size' else 'out']}: "
                          f"{fmt.nbytes(r[key].get('file_bytes'))}"))
    if "size" in r and "float_size" in r:
        pairs.append(("size vs fp32", fmt.ratio(r["size"]["file_bytes"] / r["float_size"]["file_bytes"])))
    if "run_dir" in r:
        pairs.append(("run dir", str(r["run_dir"])))
    console.print(fmt.key_values("Summary", pairs))
