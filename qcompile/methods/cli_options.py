"""A method's command-line options, declared as plain data.

A method lists its options here rather than in the CLI. The declaration imports neither torch
nor click, so ``qcompile compile --help`` can list every method's options without loading any
method; the CLI turns each :class:`CliOption` into a click option, and the value a user gives
arrives in the API as ``method_options[key]``. An option not given is absent from
``method_options``, so the method's own default applies and the CLI cannot disagree with the API.
"""

from __future__ import annotations

from dataclasses import dataclass

OPTION_TYPES = (str, int, float, bool)


@dataclass(frozen=True)
class CliOption:
    """One option: ``flag`` ('--meta-hidden'; an on/off switch is '--meta-bias/--no-meta-bias' with
    ``type=bool``), the ``key`` of its value in ``method_options``, and its values: ``choices``
    (strings), or ``type`` str/int/float with an optional lower bound ``min``."""

    flag: str
    key: str
    help: str
    type: type = str
    choices: tuple[str, ...] = ()
    case_sensitive: bool = True
    min: float | None = None
    metavar: str | None = None

    def __post_init__(self) -> None:
        if not self.flag.startswith("--") or not self.key.isidentifier():
            raise ValueError(f"option {self.flag!r} -> {self.key!r}: flags start with '--', keys are identifiers")
        if self.type not in OPTION_TYPES:
            raise ValueError(f"option {self.flag}: type must be one of str, int, float, bool")
        if (self.type is bool) != ("/" in self.flag):
            raise ValueError(f"option {self.flag}: an on/off switch is type=bool with a flag '--x/--no-x'")
        if self.choices and self.type is not str:
            raise ValueError(f"option {self.flag}: choices are strings")
        if self.min is not None and self.type not in (int, float):
            raise ValueError(f"option {self.flag}: a lower bound needs type int or float")

    @property
    def spellings(self) -> tuple[str, ...]:
        """Every spelling on the command line ('--meta-bias', '--no-meta-bias')."""
        return tuple(self.flag.split("/"))


@dataclass(frozen=True)
class CliOptions:
    """What a method adds to ``compile`` and ``inspect``.

    ``title`` names the method in help and errors (e.g. 'Universal quantization'; default: its registered name);
    ``description`` is printed above its options in ``--help``; ``usage`` says what else
    ``--method NAME`` needs, for the hint when its options are given with another method
    (e.g. 'with --quantizer dorefa or bwn').
    """

    options: tuple[CliOption, ...] = ()
    title: str = ""
    description: str = ""
    usage: str = ""

    def __post_init__(self) -> None:
        spellings = [s for o in self.options for s in o.spellings]
        keys = [o.key for o in self.options]
        if len(set(spellings)) != len(spellings) or len(set(keys)) != len(keys):
            raise ValueError(f"{self.title or 'a method'} declares an option flag or key twice")
