"""Flags shared between commands, declared once and handed to commands as small dicts.

``inspect`` and ``compile`` take the same model and quantization flags; ``compile`` and ``finetune`` the
same training flags. Each family is an :func:`option_group`: its values arrive in the command as one
dict (``source``, ``quant``, ``train``) whose keys are the API's argument names, so a command
passes them on with ``**`` and a new API argument is one new flag here. Defaults left as ``None`` mean
"the API's default": :func:`given` drops them, so the CLI and the API cannot disagree on a default.
A method's own options are declared by the method (see :mod:`qcompile.cli.method_options`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from qcompile.runtime.cli.bench import BATCH_SIZES_HELP
from qcompile.runtime.cli.command import DATA_FORMS, PROVIDERS, PROVIDERS_HELP, parse_int_list

LAYER_POLICIES = click.Choice(["quantize", "8bit", "float"])


class _FloatActivations:
    """What ``--a-bits none`` parses to: unlike ``None`` ("flag not given"), :func:`given` keeps it."""

    def __repr__(self) -> str:
        return "none"


FLOAT_ACTIVATIONS = _FloatActivations()


class BitsOrNone(click.ParamType):
    """``--a-bits 8`` or ``--a-bits none`` (activations stay float; the API's ``a_bits=None``)."""

    name = "BITS|none"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if value is None or value is FLOAT_ACTIVATIONS or isinstance(value, int):
            return value
        if str(value).lower() in ("none", "float", "fp32"):
            return FLOAT_ACTIVATIONS
        try:
            return int(value)
        except ValueError:
            self.fail(f"{value!r} is not a number of bits or 'none'", param, ctx)


class FiniteFloat(click.FloatRange):
    """A float option that must be finite (and within the optional bounds of ``click.FloatRange``).

    ``inf`` and ``nan`` parse as floats, and ``nan`` even passes click's range checks; a learning
    rate of ``inf`` would train a run of NaNs. Refused as a :class:`~qcompile.errors.ConfigError`
    naming the flag (exit 2).
    """

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = click.FLOAT.convert(value, param, ctx)
        if not math.isfinite(number):
            from qcompile.errors import ConfigError

            flag = param.opts[0] if param is not None and param.opts else "the option"
            raise ConfigError(f"{flag} must be a finite number, got {value!r}",
                              hint=f"pass a finite number{self._bounds()}")
        return super().convert(number, param, ctx)

    def _bounds(self) -> str:
        """`` (accepted: x>0)`` when the option has bounds (click's own rendering of them)."""
        return f" (accepted: {self._describe_range()})" if self.min is not None or self.max is not None else ""


def int_list_option(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[int, ...] | None:
    if value is None:
        return None
    try:
        return parse_int_list(value)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None


def _layer_bits(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> dict[str, int]:
    out = {}
    for item in values:
        pattern, sep, bits = item.rpartition("=")
        if not sep or not pattern or not bits.strip().isdigit():
            raise click.BadParameter(f"{item!r}: write GLOB=BITS, e.g. 'features.*=8' or 'fc=0' (0 keeps it float)")
        out[pattern] = int(bits)
    return out


def option_group(group: str, make_params: Callable[[], list[click.Parameter]]):
    """Attach the parameters ``make_params()`` builds and pass their values as one dict kwarg ``group``.

    Parameters are built per command (click parameters are objects, and sharing one between two
    commands would couple them).
    """

    def decorator(f: Callable[..., Any]) -> Callable[..., Any]:
        params = make_params()
        names = [p.name for p in params]

        @functools.wraps(f)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            kwargs[group] = {name: kwargs.pop(name) for name in names}
            return f(*args, **kwargs)

        wrapper.__click_params__ = [*getattr(f, "__click_params__", []), *reversed(params)]
        return wrapper

    return decorator


def given(values: dict[str, Any]) -> dict[str, Any]:
    """The options the user set (``None`` means "use the API default"; ``--a-bits none`` becomes ``None``)."""
    return {k: None if v is FLOAT_ACTIVATIONS else v for k, v in values.items() if v is not None}


def absolute_spec(spec: str) -> str:
    """``dir/file.py:build`` → ``/abs/dir/file.py:build`` (and ``mnist:rel`` → ``mnist:/abs/rel``).

    Run directories store these specs; ``qcompile finetune`` may be run from another directory.
    """
    head, sep, tail = spec.partition(":")
    if spec.count(":") == 1 and head.endswith(".py"):  # model file spec
        return f"{Path(head).expanduser().resolve()}:{tail}"
    if sep and head in ("mnist", "folder", "npz") and tail:  # data spec with a path
        path, q, query = tail.partition("?")
        return f"{head}:{Path(path).expanduser().resolve()}{q}{query}"
    return spec


# ----------------------------------------------------------------------------- groups
model_source = option_group("source", lambda: [
    click.Argument(["model"], metavar="MODEL"),
    click.Option(["--weights", "-w"], type=click.Path(dir_okay=False), default=None,
                 help="State dict to load into the model (torch.save(model.state_dict(), W.pt)); read with weights_only=True."),
    click.Option(["--input-shape", "-s"], required=True, metavar="SHAPE",
                 help="Example input shape with batch, e.g. 1,1,28,28 (several inputs: '1,3,32,32;1,10')."),
    click.Option(["--leaf", "leaf_modules"], multiple=True, metavar="NAME",
                 help="Module (qualified name or class name) to keep opaque to tracing, in float. Repeatable."),
])

quant_options = option_group("quant", lambda: [
    click.Option(["--method"], default=None, metavar="NAME", help="Quantization method plug-in [default: ste]."),
    click.Option(["--w-bits"], type=int, default=None, help="Weight bits, 1..8 [default: 4]."),
    click.Option(["--a-bits"], type=BitsOrNone(), default=None,
                 help="Activation bits, 2..8, or 'none' to keep activations float [default: 8, for every method]."),
    click.Option(["--quantizer"], default=None, metavar="NAME",
                 help="Weight quantizer: uniform | uniform-asym | dorefa | bwn [default: uniform]."),
    click.Option(["--per-channel/--per-tensor", "per_channel"], default=None,
                 help="Weight scales per output channel or per tensor [default: the quantizer's usual choice]."),
    click.Option(["--group-size"], type=int, default=None, metavar="G",
                 help="Linear weights with one scale per G inputs (16, 32, 64, 128, 256; --w-bits 2, 4 or 8, "
                      "--a-bits none), exported as onnxruntime's MatMulNBits: they stay packed in memory "
                      "[default: off]."),
    click.Option(["--first-layer"], type=LAYER_POLICIES, default=None,
                 help="First conv/linear: quantize like the rest, at 8 bits, or keep float [default: quantize]."),
    click.Option(["--last-layer"], type=LAYER_POLICIES, default=None,
                 help="Last conv/linear policy, as --first-layer [default: quantize]."),
    click.Option(["--layer-bits"], multiple=True, callback=_layer_bits, metavar="GLOB=BITS",
                 help="Per-layer weight bits by name glob, e.g. 'conv1=8'; 0 keeps the layer float. Repeatable."),
    click.Option(["--target"], type=click.Choice(["auto", "exact", "ort-int8"]), default=None,
                 help="What the export runs on: exact (integer-domain float arithmetic, bit-exact anywhere), "
                      "ort-int8 (onnxruntime's 8-bit integer kernels: QLinearConv, QGemm, ...; needs --method ste, "
                      "--a-bits 8, uniform 2..8-bit weights) or auto (ort-int8 when the model has those and the CPU "
                      "is x86, else exact; the summary says which and why) [default: auto]."),
])



def normalization_options(help: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--norm NAME`` or ``--mean/--std`` as the ``norm`` dict (``norm``, ``mean``, ``std``; None = not given),
    the keyword arguments of :func:`qcompile.runtime.normalisation.choose`, which validates them."""
    from qcompile.runtime.normalisation import CHOICES

    return option_group("norm", lambda: [
        click.Option(["--norm"], type=click.Choice(CHOICES, case_sensitive=False), default=None,
                     help=f"{help} A preset (imagenet, cifar10, mnist; none = images in [0, 1] as they are) or "
                          "'data': the training split's per-channel statistics (compile's default)."),
        click.Option(["--mean"], metavar="M[,M...]", default=None,
                     help="Per-channel input mean (one value, or one per channel), with --std; instead of --norm."),
        click.Option(["--std"], metavar="S[,S...]", default=None, help="Per-channel input std, with --mean."),
    ])


def data_option(required: bool, help: str, default: str | None = None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    return click.option("--data", "-d", required=required, metavar="SPEC", default=default, show_default=default is not None,
                        help=f"{help} One of: {DATA_FORMS}.")


def train_options(min_epochs: int) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Finetuning flags (``TrainConfig`` fields); ``--epochs 0`` is allowed where calibration alone makes sense."""
    zero = " 0 = calibrate only (post-training quantization)." if min_epochs == 0 else ""
    return option_group("train", lambda: [
        click.Option(["--epochs", "-e"], type=click.IntRange(min=min_epochs), default=None,
                     help=f"Finetuning epochs [default: 1; with --resume: those of the call it finishes].{zero}"),
        click.Option(["--lr"], type=FiniteFloat(min=0, min_open=True), default=None, help="Learning rate [default: 0.01]."),
        click.Option(["--optimizer"], type=click.Choice(["sgd", "adam"]), default=None, help="[default: sgd]"),
        click.Option(["--momentum"], type=FiniteFloat(0, 1, max_open=True), default=None, help="SGD momentum [default: 0]."),
        click.Option(["--schedule"], type=click.Choice(["cosine", "step", "constant"]), default=None,
                     help="Learning-rate schedule over the epochs [default: cosine]."),
        click.Option(["--step-size"], type=click.IntRange(min=1), default=None,
                     help="--schedule step: multiply the lr by --gamma every N epochs [default: 30]."),
        click.Option(["--gamma"], type=FiniteFloat(min=0, min_open=True), default=None,
                     help="--schedule step: lr decay factor [default: 0.1]."),
        click.Option(["--weight-decay"], type=FiniteFloat(min=0), default=None, help="[default: 0]"),
        click.Option(["--batch-size", "-b"], type=click.IntRange(min=1), default=None, help="[default: 64]"),
        click.Option(["--kd-alpha"], type=FiniteFloat(0, 1), default=None,
                     help="Weight of distillation from the float model, 0..1 [default: 0, off]."),
        click.Option(["--seed"], type=int, default=None, help="Seed for data order and init; CPU runs repeat exactly [default: 0]."),
        click.Option(["--checkpoint-every"], type=click.IntRange(min=0), default=None,
                     help="Checkpoint into RUN_DIR/checkpoints every N steps [default: 0, end of each epoch only]."),
        click.Option(["--bn-reestimate", "bn_reestimate_batches"], type=click.IntRange(min=0), default=None,
                     metavar="BATCHES", help="After calibration and after training, recompute BatchNorm statistics with "
                     "the quantized weights on this many training batches; 0 = off [default: 64]."),
        click.Option(["--freeze-bn-after"], type=click.IntRange(min=0), default=None, metavar="EPOCH",
                     help="From this epoch (0-based) on, BatchNorm trains with frozen running statistics, folded into "
                          "the op; with --target ort-int8 those epochs train the integer kernels' arithmetic, and the "
                          "statistics are not re-estimated after training [default: off, batch statistics]."),
        click.Option(["--max-steps"], type=click.IntRange(min=1), default=None,
                     help="Stop after N optimizer steps in total (quick runs)."),
        click.Option(["--sync-bn", "sync_bn"], is_flag=True, default=None,
                     help="Under torchrun: BatchNorm trains on the statistics of the whole global batch, not each rank's "
                          "share [default: off]."),
        click.Option(["--resume"], is_flag=True,
                     help="Finish an interrupted or stopped training call from RUN_DIR/checkpoints, to the epochs and "
                          "with the options it was given."),
    ])


def out_option(required: bool, help: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    return click.option("--out", "-o", "out_path", type=click.Path(dir_okay=False, path_type=Path),
                        required=required, default=None, help=help)


batch_sizes_option = click.option(
    "--batch-sizes", callback=int_list_option, default="1,64", show_default=True, metavar="N[,N...]",
    help=BATCH_SIZES_HELP)

providers_option = click.option(
    "--providers", type=click.Choice(list(PROVIDERS)), default="auto", show_default=True, help=PROVIDERS_HELP)
