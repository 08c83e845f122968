"""``qcompile compile``, ``finetune`` and ``export``: the steps that build an artifact, chained by a run dir.

``compile`` does the whole job (trace → quantize → calibrate → finetune → export) and saves the
quantized model in a run directory (``runs/<out stem>`` by default). ``finetune RUN_DIR --epochs N``
trains it N more epochs; ``finetune RUN_DIR --resume`` finishes a training call that was interrupted
(Ctrl-C, ``kill -9``, an error) or stopped by ``--max-steps``, to the epochs it asked for. ``export
RUN_DIR`` writes the same file ``compile`` wrote, from the run directory alone (its data may be gone).
``run.json`` says whether a run is complete or resumable (:mod:`qcompile.run_state`); a compile that
fails before training writes nothing. Every summary reports the two numbers that decide whether an
artifact is good — the quantized accuracy in PyTorch and the same in onnxruntime (they must match) —
or says why they were not measured.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from qcompile.cli import output as fmt
from qcompile.cli.commands.inspection import build_compiled, method_options_text
from qcompile.cli.commands.runtime import size_summary
from qcompile.cli.method_options import MethodOptionsCommand
from qcompile.cli.options import (absolute_spec, data_option, given, model_source, normalization_options, out_option,
                                  quant_options, train_options)
from qcompile.cli.output import Output, Result, reporting

CHECKPOINTS = "checkpoints"
DEFAULT_DATA = "digits"  # compile's data when it needs some and neither the user nor the method gives any
NORM_HELP = "What the model expects of images in [0, 1] (a pretrained model needs the values it was trained with)."
RUN_NORM_HELP = "The run's input normalisation, for a run that has none recorded (compiled without data); " \
                "a run that has one keeps it."

run_dir_argument = click.argument("run_dir", metavar="RUN_DIR",
                                  type=click.Path(exists=True, file_okay=False, path_type=Path))


# ----------------------------------------------------------------------------- shared steps
def training_call(command: str, train: dict[str, Any], recorded=None):
    """``(call, finetune kwargs, resume)`` from the ``train`` group, checked before any slow work starts.

    ``call`` is None for ``--epochs 0``. ``recorded`` is the unfinished call ``--resume`` finishes: its
    epochs and options, overridden by options given again (the checkpoint refuses changes that would
    alter the trajectory)."""
    from qcompile.errors import ConfigError
    from qcompile.run_state import TrainingCall

    options = given(train)
    resume = options.pop("resume", False)
    epochs = options.pop("epochs", None)
    if recorded is not None:
        if epochs is not None and epochs != recorded.epochs:
            raise ConfigError(f"--epochs {epochs} with --resume, but the call being resumed ({recorded.command}) "
                              f"asked for {recorded.epochs} epoch(s)",
                              hint="drop --epochs: --resume finishes that call; then train more with --epochs N")
        command, epochs, options = recorded.command, recorded.epochs, {**recorded.options, **options}
    epochs = 1 if epochs is None else epochs
    if epochs == 0:
        if resume:
            raise ConfigError("--resume needs training", hint="drop --resume, or pass --epochs N (N >= 1)")
        return None, options, False
    return TrainingCall(command, epochs, {k: v for k, v in options.items() if k != "max_steps"}), options, resume


def train_in_run_dir(cm, call, options: dict[str, Any], resume: bool, run_dir: Path, out: Output,
                     previous: list[dict] = ()) -> dict[str, Any]:
    """One training call on ``cm``, recorded in ``run_dir``: ``qmodel.pt`` holds the model before the call
    (what a resume starts from) and ``run.json`` says ``running`` until the call ends, then ``complete`` —
    or ``interrupted``/``failed``, which ``finetune --resume`` continues from the checkpoint."""
    from qcompile.run_dir import save_run
    from qcompile.run_state import COMPLETE, FAILED, INTERRUPTED, begin, end
    from qcompile.train import checkpoint_path

    checkpoint = checkpoint_path(run_dir / CHECKPOINTS)
    if resume and not checkpoint.is_file():
        out.log(f"no checkpoint in {checkpoint.parent}: the call starts again from its first step")
        resume = False
    if out.quiet:  # a data-parallel rank other than 0 trains; rank 0 alone writes the run directory
        return run_training(cm, call, options, resume, run_dir, out)[0]
    if not resume:
        save_run(cm, run_dir)
        checkpoint.unlink(missing_ok=True)  # an earlier call's checkpoint must never be resumed into this one
    call = replace(call, data=call.data or cm.data_spec)
    begin(run_dir, call)
    try:
        training, step_records = run_training(cm, call, options, resume, run_dir, out)
    except KeyboardInterrupt:
        end(run_dir, call, INTERRUPTED)
        raise
    except Exception as exc:
        end(run_dir, call, FAILED, error=(getattr(exc, "message", None) or str(exc) or type(exc).__name__)[:500])
        raise
    save_records(cm, run_dir, step_records, resume=resume, previous=list(previous))
    end(run_dir, replace(call, completed=training["completed"]), COMPLETE)
    return training


def run_training(cm, call, options: dict[str, Any], resume: bool, run_dir: Path,
                 out: Output) -> tuple[dict[str, Any], list[dict]]:
    """Finetune ``cm`` for ``call``; returns the summary and the method's per-step records (e.g. a
    meta-network's loss), which the summary only condenses and :func:`save_records` keeps whole."""
    from qcompile.report import summarise_steps

    out.log(f"finetuning for {call.epochs} epoch(s); checkpoints in {run_dir / CHECKPOINTS}")
    result = cm.finetune(checkpoint_dir=run_dir / CHECKPOINTS, resume=resume, progress=out.progress,
                         epochs=call.epochs, **options)
    summary = {"epochs": call.epochs, "steps": result.steps, "seconds": result.seconds,
               "completed": result.completed, "final_test": result.final_test,
               "final_test_acc": result.final_test_acc, "history": result.history,
               "extra_metrics": summarise_steps(result.step_records)}
    return summary, result.step_records


def save_records(cm, run_dir: Path, step_records: list[dict], *, resume: bool, previous: list[dict]) -> None:
    """``save_run``, then ``history.json`` again with the per-step records of every training call so far
    (``previous``: those already in the run dir; see :func:`qcompile.report.merge_steps`)."""
    from qcompile.report import merge_steps
    from qcompile.run_dir import run_label, save_run, write_history

    save_run(cm, run_dir)
    if step_records or previous:
        write_history(run_dir, cm.history, label=run_label(cm),
                      steps=merge_steps(previous, step_records, resume))


def export_artifacts(cm, out_path: Path, float_out: Path | None, out: Output, no_data: str | None) -> dict[str, Any]:
    """Write the packed ONNX (and optionally the fp32 reference), then measure and check them in ORT on the
    model's data; without data (``no_data`` says why) the check is skipped and the summary says so."""
    from qcompile.parity import compare_onnx, warn_on_parity

    out.log(f"exporting {out_path}")
    report = cm.export(out_path)
    result: dict[str, Any] = {"out": out_path, "opset": report.opset, "onnx_passes": report.onnx_passes,
                              "size": size_summary(out_path), "task": cm.task.name}
    if float_out is not None:
        out.log(f"exporting fp32 reference {float_out}")
        cm.export_float(float_out)
        result["float_out"] = float_out
        result["float_size"] = size_summary(float_out)
    if cm.data is not None:
        out.log(f"checking {out_path} in onnxruntime on {len(cm.data.test)} test samples")
        norm = cm.normalization
        result["parity"] = compare_onnx(cm.graph_module, out_path, cm.data.test, norm.mean, norm.std, task=cm.task)
        warn_on_parity(result["parity"], cm.plan)
    else:
        out.log(f"not checking {out_path} in onnxruntime: {no_data}")
        result["parity_skipped"] = no_data
    return result


def ensure_data(cm, spec: str | None = None, default: str | None = None):
    """The run's dataset: ``spec`` when given, else the one it was compiled with or the method's own
    (see ``CompiledModel.load_data``), else ``default``; None if none of them."""
    if spec is not None:
        return cm.use_data(absolute_spec(spec))
    if cm.data is None:
        found = cm.load_data(cm.data_spec)
        if found is not None:
            cm.use_data(found)
        elif default is not None:
            cm.use_data(default)
    return cm.data


def default_data(cm, call):
    """Data for a compile given no ``--data``: the method's own if it has any, else the default dataset —
    unless its images do not fit the model and nothing needs data (no training, no activation ranges to
    calibrate: a weight-only compile), which then reads none. None when there is none."""
    if ensure_data(cm) is not None:
        return cm.data
    needed = call is not None or bool(cm.activation_quantizers())
    fits = tuple(cm.load_data(DEFAULT_DATA).input_shape) == tuple(cm.example_inputs[0].shape[1:])
    return ensure_data(cm, default=DEFAULT_DATA) if needed or fits else None  # needed but unfit: an error with the fix


def parity_data(cm) -> str | None:
    """Load the run's data for the onnxruntime check; why there is none (None when there is). A data
    folder that is gone does not stop an export: the run directory holds all the artifact needs."""
    from qcompile.errors import DataError

    try:
        if ensure_data(cm) is not None:
            return None
    except DataError as e:
        return f"the run's data {cm.data_spec} cannot be read here ({e.message})"
    return "the run was compiled without data"


def use_normalization(cm, norm: dict[str, Any]) -> None:
    """``--norm`` / ``--mean/--std`` on a saved run: supplies one it lacks; a different one is an error."""
    from qcompile.runtime.normalisation import choose

    chosen = choose(**norm)
    if chosen is not None:
        cm.set_normalization(chosen)


def accuracies(cm) -> dict[str, Any] | None:
    """Float and quantized test accuracy in PyTorch (None without data)."""
    if cm.data is None:
        return None
    return {"float": cm.evaluate(model=cm.float_model), "quantized_torch": cm.evaluate(),
            "test_samples": len(cm.data.test)}


def check_out_path(out_path: Path) -> None:
    """Refuse an output name that is not a ``.onnx`` file (or a ``.qcz`` bundle, which a method writing its own
    kind of artifact may produce) before any slow work starts."""
    from qcompile.errors import ConfigError

    if out_path.suffix.lower() not in (".onnx", ".qcz"):
        raise ConfigError(f"output {out_path} does not end in .onnx (or .qcz for a bundle)",
                          hint="name the artifact e.g. model-w4a8.onnx (a dynamic model: model.qcz)")
    if out_path.is_dir():
        raise ConfigError(f"output {out_path} is a directory", hint="pass a file name, e.g. out/model.onnx")


def input_summary(cm) -> dict[str, Any]:
    """What the artifact records about its input, and the target it runs on (and why)."""
    from qcompile.targets import target_fields

    return {"normalization": cm.normalization.to_dict() if cm.normalization else None, "classes": cm.classes,
            **target_fields(cm.plan)}


# ----------------------------------------------------------------------------- commands
@click.command("compile", cls=MethodOptionsCommand)
@model_source
@quant_options
@data_option(required=False,
             help="Data for calibration and finetuning; its test split scores the result. Without it: the method's own "
                  f"data if it provides any, else scikit-learn's bundled {DEFAULT_DATA} (1×8×8), which needs no files — "
                  "unless it does not fit the model and nothing needs data (--a-bits none --epochs 0): then the model "
                  "is exported unchecked.")
@normalization_options(NORM_HELP)
@train_options(min_epochs=0)
@click.option("--run-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where to save the run for `finetune`/`export` [default: runs/<out stem>].")
@out_option(required=True, help="Packed low-bit ONNX file to write.")
@click.option("--float-out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the fp32 ONNX of the original model (the size/latency reference).")
@reporting
def compile_command(out: Output, source: dict, quant: dict, data: str | None, norm: dict, train: dict,
                    run_dir: Path | None, out_path: Path, float_out: Path | None, method_flags: list) -> Result:
    """Trace, quantize, calibrate, finetune and export MODEL to packed low-bit ONNX.

    MODEL is 'path/file.py:factory' or 'package.module:attr'. --epochs 0 calibrates only (PTQ).
    A --method takes its own options (listed under it below); its per-step metrics go to
    RUN_DIR/history.json. Nothing is written if it fails before training; a run that fails or is
    stopped while training is marked so in RUN_DIR/run.json and `finetune RUN_DIR --resume` finishes it.
    """
    from qcompile.run_dir import save_run
    from qcompile.run_state import COMPLETE, RunState, check_not_running, read_state, write_state

    for path in (out_path, float_out):
        if path is not None:
            check_out_path(path)
    call, options, resume = training_call("compile", train)
    run_dir = run_dir or Path("runs") / out_path.stem
    if resume:
        check_not_running(run_dir, read_state(run_dir))
    out.log(f"tracing {source['model']} and inserting quantizers")
    calibration = given({"bn_reestimate_batches": train["bn_reestimate_batches"]})
    cm = build_compiled(source, quant, data, method_flags, calibration, norm)
    if data is None and default_data(cm, call) is not None:
        cm.calibrate(**calibration)  # as --data would be
    if call is not None and cm.leaf_modules:
        out.log("checking that the model, leaf modules included, exports to ONNX before training it")
        cm.dry_run_export()
    training = train_in_run_dir(cm, call, options, resume, run_dir, out) if call else None
    if out.quiet:  # the export is rank 0's
        return Result({"training": training}, render_summary)
    summary = {"model": source["model"], "run_dir": run_dir, "spec": cm.plan.spec.to_dict(),
               "sites": [{"name": s.name, "op": s.op, "w_bits": s.w_bits, "a_bits": s.a_bits} for s in cm.plan.sites],
               **input_summary(cm), "accuracy": accuracies(cm), "training": training,
               **export_artifacts(cm, out_path, float_out, out, no_data="no data was given or needed")}
    if call is None:  # calibration only: the run directory appears once the artifact exists
        save_run(cm, run_dir)
        write_state(run_dir, RunState(COMPLETE))
    return Result(summary, render_summary)


@click.command()
@run_dir_argument
@data_option(required=False, help="Training data [default: the data the run was compiled with].")
@normalization_options(RUN_NORM_HELP)
@train_options(min_epochs=1)
@reporting
def finetune(out: Output, run_dir: Path, data: str | None, norm: dict, train: dict) -> Result:
    """Train the quantized model saved in RUN_DIR (by `compile`) further, and save it back.

    --epochs N trains N more epochs. --resume instead finishes the training call that was interrupted
    (Ctrl-C, kill, an error) or stopped by --max-steps, to the epochs and with the options it was given.
    The method and its options are the ones the run was compiled with. RUN_DIR names the model file it
    was compiled from, which is imported (run) again: treat run directories as code.
    """
    from qcompile.report import HISTORY, read_run
    from qcompile.run_dir import load_run
    from qcompile.run_state import require_finished, resumable_call

    recorded = resumable_call(run_dir) if train["resume"] else None
    if recorded is None:
        require_finished(run_dir, "train")
    call, options, resume = training_call("finetune", train, recorded)
    cm = load_run(run_dir)
    use_normalization(cm, norm)
    previous = read_run(run_dir).steps if (run_dir / HISTORY).is_file() else []
    ensure_data(cm, data if data is not None or recorded is None else recorded.data)  # a resume trains on its data
    before = cm.evaluate()
    training = train_in_run_dir(cm, call, options, resume, run_dir, out, previous)
    summary = {"run_dir": run_dir, "spec": cm.plan.spec.to_dict(), **input_summary(cm), "accuracy_before": before,
               "accuracy": accuracies(cm), "training": training}
    return Result(summary, render_summary)


@click.command()
@run_dir_argument
@out_option(required=True, help="ONNX file to write.")
@click.option("--float", "as_float", is_flag=True, help="Write the fp32 reference of the original model instead.")
@click.option("--target", type=click.Choice(["exact", "ort-int8"]), default=None,
              help="Check that the run was compiled for this target (exact or ort-int8); a run exports the target "
                   "it was compiled and trained for [default: the run's].")
@normalization_options(RUN_NORM_HELP)
@reporting
def export(out: Output, run_dir: Path, out_path: Path, as_float: bool, target: str | None, norm: dict) -> Result:
    """Export the model saved in RUN_DIR to ONNX (packed low-bit, or fp32 with --float).

    The file is the one `compile` wrote for the run, byte for byte; it needs only RUN_DIR (and the model
    file it names). The onnxruntime check runs when the run's data can still be read. RUN_DIR names the
    model file it was compiled from, which is imported (run) again: treat run directories as code.
    """
    from qcompile.run_dir import load_run
    from qcompile.run_state import require_finished

    check_out_path(out_path)
    require_finished(run_dir, "export")
    cm = load_run(run_dir)
    check_target(cm, target)
    use_normalization(cm, norm)
    if as_float:
        cm.export_float(out_path)
        return Result({"run_dir": run_dir, "out": out_path, "float": True, "size": size_summary(out_path)}, render_summary)
    no_data = parity_data(cm)
    summary = {"run_dir": run_dir, "float": False, **input_summary(cm),
               **export_artifacts(cm, out_path, None, out, no_data)}
    return Result(summary, render_summary)


def check_target(cm, target: str | None) -> None:
    """A run's target is fixed at compile (its eval arithmetic and quantizers depend on it)."""
    from qcompile.errors import ConfigError

    compiled = cm.plan.spec.target
    if target is not None and target != compiled:
        raise ConfigError(f"{target!r} export of a run compiled for --target {compiled}",
                          hint=f"compile the model again with --target {target} (its grids are calibrated and "
                               f"trained for the target), or export without --target")


# ----------------------------------------------------------------------------- rendering
def render_summary(console: Console, r: dict[str, Any]) -> None:
    """One table for whichever of compile / finetune / export produced ``r``."""
    pairs: list[tuple[str, Any]] = []
    if "spec" in r:
        s = r["spec"]
        a_bits = "float" if s["a_bits"] is None else s["a_bits"]
        group = f", Linear in groups of {s['group_size']} (MatMulNBits)" if s.get("group_size") else ""
        pairs.append(("quantization", f"{s['method']}: W{s['w_bits']} A{a_bits}, {s['quantizer']}{group}"))
        if s.get("method_options"):
            pairs.append(("method options", method_options_text(s["method_options"])))
    if "target" in r:
        pairs.append(("target", f"{r['target']} ({r['target_reason']})"))
    if r.get("training"):
        t = r["training"]
        pairs.append(("training", f"{t['epochs']} epoch(s), {t['steps']} steps, {t['seconds']:.1f}s"))
        for name, m in t.get("extra_metrics", {}).items():
            pairs.append((f"  {name}", f"{m['first']:.4g} → {m['last']:.4g} (min {m['min']:.4g}, max {m['max']:.4g})"))
    elif "training" in r:
        pairs.append(("training", "none (calibration only)"))
    if "normalization" in r:
        from qcompile.runtime.normalisation import Normalization

        norm = r["normalization"]
        pairs.append(("input normalisation", Normalization.from_dict(norm).describe() if norm else
                      "none recorded (no data): give --norm or --mean/--std, or run/predict cannot normalise"))
    acc = r.get("accuracy")
    if acc is None and "accuracy" in r:
        pairs.append(("accuracy", "not measured (no data)"))
    if acc:
        pairs.append(("float accuracy (PyTorch)", fmt.pct(acc["float"])))
        if "accuracy_before" in r:
            pairs.append(("quantized accuracy before", fmt.pct(r["accuracy_before"])))
        pairs.append(("quantized accuracy (PyTorch)", fmt.pct(acc["quantized_torch"])))
    if "parity" in r:
        from qcompile.runtime.tasks import get_runtime_task

        pairs += get_runtime_task(r["task"]).parity_rows(r["parity"])
    if "parity_skipped" in r:
        pairs.append(("onnxruntime check", f"skipped: {r['parity_skipped']}"))
    for key, label in (("size", "ONNX"), ("float_size", "fp32 ONNX")):
        if key in r:
            pairs.append((f"{label} file", f"{r['float_out' if key == 'float_size' else 'out']}: "
                          f"{fmt.nbytes(r[key].get('file_bytes'))}"))
    if "size" in r and "float_size" in r:
        pairs.append(("size vs fp32", fmt.ratio(r["size"]["file_bytes"] / r["float_size"]["file_bytes"])))
    if "run_dir" in r:
        pairs.append(("run dir", str(r["run_dir"])))
    console.print(fmt.key_values("Summary", pairs))
