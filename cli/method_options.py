"""Every method's own options on ``compile`` and ``inspect``, built from the methods' declarations.

A method declares its options as plain data (:class:`qcompile.methods.CliOptions`). A command of
class :class:`MethodOptionsCommand` turns them into click options whenever it parses or prints help
(so a plug-in registered at run time is included), lists them under one heading per method in
``--help``, and hands the command the ones given as ``method_flags``. :func:`method_options` then
checks them against ``--method``: an option only means something to its method, and silently
ignoring it on a run of another method would make a user believe they ran the one it configures.
"""

from __future__ import annotations

import itertools
from typing import Any

import click

from qcompile.cli.options import FiniteFloat
from qcompile.methods.cli_options import CliOption, CliOptions
from qcompile.methods.registry import available_methods, cli_options

DEFAULT_METHOD = "ste"


class MethodFlag(click.Option):
    """The click option of one :class:`CliOption` of method ``method``."""

    def __init__(self, method: str, option: CliOption):
        name = f"method__{''.join(c if c.isalnum() else '_' for c in method)}__{option.key}"
        super().__init__([option.flag, name], type=_click_type(option), default=None, help=option.help,
                         metavar=option.metavar)
        self.method, self.key = method, option.key

    def spelling(self, value: Any) -> str:
        """The flag as given on the command line ('--no-meta-bias' for an off switch)."""
        return self.secondary_opts[0] if value is False and self.secondary_opts else self.opts[0]


def _click_type(option: CliOption) -> click.ParamType | type | None:
    if option.choices:
        return click.Choice(list(option.choices), case_sensitive=option.case_sensitive)
    if option.type is bool:
        return None  # an on/off switch: click reads '--x/--no-x'
    if option.type is float:  # inf and nan are never a rate or a weight
        return FiniteFloat(min=option.min)
    if option.min is not None:
        return click.IntRange(min=option.min)
    return option.type


class MethodOptionsCommand(click.Command):
    """A command that also takes every available method's options (values: ``method_flags``, a list of
    ``(MethodFlag, value)`` for the options given, in declaration order)."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._declared: list[tuple[str, CliOptions]] | None = None
        self._flags: list[MethodFlag] = []

    def method_flags(self) -> list[MethodFlag]:
        declared = [(name, cli_options(name)) for name in available_methods()]
        if declared != self._declared:  # built once per set of registered methods
            self._flags = self._build(declared)
            self._declared = declared
        return self._flags

    def _build(self, declared: list[tuple[str, CliOptions]]) -> list[MethodFlag]:
        from qcompile.errors import ConfigError

        taken = {s: f"`qcompile {self.name}`" for p in self.params if isinstance(p, click.Option)
                 for s in (*p.opts, *p.secondary_opts)}
        taken.update({"--help": f"`qcompile {self.name}`", "-h": f"`qcompile {self.name}`"})
        flags = []
        for method, options in declared:
            for option in options.options:
                for spelling in option.spellings:
                    if spelling in taken:
                        raise ConfigError(f"method {method!r} declares {spelling}, which {taken[spelling]} already uses",
                                          hint=f"give that option another flag in the cli_options of method {method!r}")
                    taken[spelling] = f"method {method!r}"
                flags.append(MethodFlag(method, option))
        return flags

    def get_params(self, ctx: click.Context) -> list[click.Parameter]:
        return [*super().get_params(ctx), *self.method_flags()]

    def invoke(self, ctx: click.Context) -> Any:
        values = [(flag, ctx.params.pop(flag.name, None)) for flag in self.method_flags()]
        ctx.params["method_flags"] = [(flag, value) for flag, value in values if value is not None]
        return super().invoke(ctx)

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The command's own options, then one section per method that has options."""
        records = [p.get_help_record(ctx) for p in super().get_params(ctx) if isinstance(p, click.Option)]
        with formatter.section("Options"):
            formatter.write_dl([r for r in records if r is not None])
        for method, flags in itertools.groupby(self.method_flags(), key=lambda f: f.method):
            declared = cli_options(method)
            with formatter.section(f"{declared.title or method} options (--method {method})"):
                if declared.description:
                    formatter.write_text(declared.description)
                formatter.write_dl([r for f in flags if (r := f.get_help_record(ctx)) is not None])


def method_options(quant: dict[str, Any], given: list[tuple[MethodFlag, Any]]) -> dict[str, Any] | None:
    """The options given for the chosen ``--method`` as the API's ``method_options`` (None when none).

    Options of another method are an error naming them and the method they configure.
    """
    from qcompile.errors import ConfigError

    method = (quant.get("method") or DEFAULT_METHOD).lower()
    for other, flags in itertools.groupby(given, key=lambda fv: fv[0].method):
        if other != method:
            spelled = ", ".join(flag.spelling(value) for flag, value in flags)
            declared = cli_options(other)
            usage = f" ({declared.usage})" if declared.usage else ""
            raise ConfigError(f"{spelled} configure {declared.title or other}, but the method is {method!r}",
                              hint=f"add --method {other}{usage}, or drop {spelled}")
    return {flag.key: value for flag, value in given} or None
