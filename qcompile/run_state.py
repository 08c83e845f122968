"""A run directory's lifecycle, recorded in ``run.json``: is the saved model finished, or resumable?

A run directory holds ``qmodel.pt`` (the model as of the last finished step) and, while a command
trains it, ``checkpoints/``. A killed or failed command must not leave a directory that looks
finished, nor one that ``finetune --resume`` cannot continue, so ``run.json`` says which holds:

=============  =====================================================================================
``running``    a command is training it (its pid and host are recorded; a pid that no longer runs on
               this host, e.g. after ``kill -9``, reads as ``interrupted``)
``interrupted`` training stopped (Ctrl-C, kill): ``qmodel.pt`` holds the model from before that call
               and ``checkpoints/`` its progress; ``finetune RUN_DIR --resume`` finishes the call, to
               the epochs and with the options it was given
``failed``     a command raised during training: like ``interrupted``, plus the error
``complete``   ``qmodel.pt`` holds the finished model; ``export`` and ``finetune --epochs N`` use it.
               A call stopped early by ``--max-steps`` is complete too, and ``--resume`` can finish it
=============  =====================================================================================

A directory without ``run.json`` but with ``qmodel.pt`` (written before the record existed) is complete.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from qcompile.atomic import atomic_write_text
from qcompile.errors import RunDirError

RUN_JSON = "run.json"
RUNNING, INTERRUPTED, FAILED, COMPLETE = "running", "interrupted", "failed", "complete"
STATUSES = (RUNNING, INTERRUPTED, FAILED, COMPLETE)


@dataclass(frozen=True)
class TrainingCall:
    """One training call (of ``compile`` or ``finetune``): what ``--resume`` continues. ``options`` are the
    training options given (``--max-steps`` excluded: a resumed call runs to its epochs), ``data`` the spec
    of the data it trained on."""

    command: str
    epochs: int
    options: dict[str, Any] = field(default_factory=dict)
    completed: bool = False
    data: str | None = None


@dataclass(frozen=True)
class RunState:
    status: str
    call: TrainingCall | None = None
    error: str | None = None
    pid: int | None = None
    host: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "call": asdict(self.call) if self.call else None}

    @property
    def resumable(self) -> bool:
        """An unfinished training call that ``--resume`` can finish."""
        return self.call is not None and (self.status in (INTERRUPTED, FAILED) or not self.call.completed)


def read_state(run_dir: str | Path) -> RunState | None:
    """The run's state (None: not a run directory). A ``running`` record whose process is gone reads as
    ``interrupted``."""
    from qcompile.run_dir import QMODEL

    path = Path(run_dir) / RUN_JSON
    if not path.is_file():
        return RunState(COMPLETE) if (Path(run_dir) / QMODEL).is_file() else None
    try:
        d = json.loads(path.read_text())
        call = TrainingCall(**d["call"]) if d.get("call") else None
        state = RunState(d["status"], call, d.get("error"), d.get("pid"), d.get("host"))
    except (ValueError, KeyError, TypeError) as e:
        raise RunDirError(f"{path} is damaged ({type(e).__name__}: {e})",
                          hint="compile the run again into a fresh --run-dir") from None
    if state.status not in STATUSES:
        raise RunDirError(f"{path} has an unknown status {state.status!r}",
                          hint=f"it should be one of {', '.join(STATUSES)}; compile the run again into a fresh --run-dir")
    if state.status == RUNNING and not _still_running(state):
        return replace(state, status=INTERRUPTED)
    return state


def write_state(run_dir: str | Path, state: RunState) -> None:
    atomic_write_text(Path(run_dir) / RUN_JSON, json.dumps(state.to_dict(), indent=1))


def begin(run_dir: str | Path, call: TrainingCall) -> None:
    """Record that this process is now training ``run_dir``."""
    write_state(run_dir, RunState(RUNNING, call, pid=os.getpid(), host=socket.gethostname()))


def end(run_dir: str | Path, call: TrainingCall, status: str, error: str | None = None) -> None:
    """Record how the training call ended (``complete``, ``interrupted`` or ``failed`` with its error)."""
    write_state(run_dir, RunState(status, call, error))


def check_not_running(run_dir: str | Path, state: RunState | None) -> None:
    if state is not None and state.status == RUNNING:
        raise RunDirError(f"{run_dir} is being trained by another qcompile process (pid {state.pid})",
                          hint="wait for it to finish (or stop it: then `qcompile finetune RUN_DIR --resume` "
                               "continues where it stopped)")


def require_finished(run_dir: str | Path, action: str) -> RunState:
    """The state of a run whose model is finished, for ``action`` (e.g. 'export'); otherwise an error
    saying what state it is in and what to run."""
    state = read_state(run_dir)
    if state is None:
        from qcompile.run_dir import QMODEL

        raise RunDirError(f"{run_dir} is not a run directory (it holds no {QMODEL} or {RUN_JSON})",
                          hint="pass the --run-dir that `qcompile compile` wrote (default: runs/<out stem>)")
    check_not_running(run_dir, state)
    if state.status in (INTERRUPTED, FAILED):
        call = state.call
        how = "was interrupted" if state.status == INTERRUPTED else "failed"
        what = f"its {call.command} {how} while training ({call.epochs} epoch(s) asked)" if call else f"it {how}"
        cause = f": {state.error}" if state.error else ""
        raise RunDirError(f"cannot {action} {run_dir}: {what}{cause}",
                          hint=f"finish the training first: qcompile finetune {run_dir} --resume")
    return state


def resumable_call(run_dir: str | Path) -> TrainingCall:
    """The unfinished training call ``finetune --resume`` continues; an error when there is none."""
    state = read_state(run_dir)
    if state is None:
        require_finished(run_dir, "resume")  # raises: not a run directory
    check_not_running(run_dir, state)
    if not state.resumable:
        done = (f"its last training call ({state.call.command}, {state.call.epochs} epoch(s)) finished"
                if state.call else "it has no unfinished training call")
        raise RunDirError(f"{run_dir} has nothing to resume: {done}",
                          hint=f"train more epochs without --resume: qcompile finetune {run_dir} --epochs N "
                               "(N more epochs)")
    return state.call


def _still_running(state: RunState) -> bool:
    """Is the recorded process alive? Only checkable on the same host; another host's is assumed gone."""
    if state.pid is None or state.host != socket.gethostname():
        return False
    try:
        os.kill(state.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True
