"""The codecs shipped inside the runtime package (``qcompile/runtime/codecs/*.qcodec``), and ``--model``.

Like CompressAI's model zoo, a few trained qualities come with the install, so compressing works with
no training. ``--model`` takes a bundle path or a shipped name (the file's stem); without it,
compression uses the middle quality (the median λ of the shipped codecs) and decompression picks the
shipped codec whose fingerprint the file carries.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

from qcompile.runtime.container import MANIFEST_MEMBER, read_artifact
from qcompile.runtime.engine import Engine
from qcompile.runtime.errors import ArtifactError

SHIPPED_DIR = Path(__file__).resolve().parents[1] / "codecs"
SUFFIX = ".qcodec"


def shipped() -> list[dict[str, Any]]:
    """``[{"name", "path", "lambda"}]`` of the shipped codecs, by increasing λ (rate)."""
    found = []
    for path in sorted(SHIPPED_DIR.glob(f"*{SUFFIX}")):
        try:
            with zipfile.ZipFile(path) as z:
                fields = json.loads(z.read(MANIFEST_MEMBER)).get("codec", {})
        except (OSError, KeyError, ValueError, zipfile.BadZipFile) as e:
            raise ArtifactError(f"shipped codec {path} cannot be read ({e})",
                                hint="reinstall qcompile-runtime; the package is damaged") from None
        found.append({"name": path.stem, "path": path, "lambda": fields.get("lambda")})
    return sorted(found, key=lambda c: (c["lambda"] is None, c["lambda"] or 0, c["name"]))


def _none_shipped() -> ArtifactError:
    return ArtifactError(f"no codec is shipped with this install ({SHIPPED_DIR} holds no {SUFFIX} files)",
                         hint="pass --model PATH.qcodec (train and export one with `qcompile codec train`)")


def resolve_model(model: str | Path | None) -> Path:
    """The bundle path for ``--model``: an existing path, a shipped name, or (None) the shipped middle quality."""
    if model is None:
        codecs = shipped()
        if not codecs:
            raise _none_shipped()
        return codecs[(len(codecs) - 1) // 2]["path"]
    path = Path(model)
    if path.exists() or path.suffix == SUFFIX or "/" in str(model):
        return path
    names = {c["name"]: c["path"] for c in shipped()}
    if str(model) in names:
        return names[str(model)]
    raise ArtifactError(f"--model {model!r} is neither a file nor a shipped codec "
                        f"(shipped: {', '.join(names) or 'none'})", hint="pass a .qcodec path or a shipped name")


def fingerprint_of(path: Path) -> bytes:
    """A bundle's codec fingerprint, without building onnxruntime sessions."""
    from qcompile.runtime.codec.spec import FIELD, TABLES, read_spec

    contents = read_artifact(path, Engine.create("auto"))
    return read_spec(contents.manifest.extra.get(FIELD), {t: contents.table(t) for t in TABLES},
                     contents.graph_bytes("decoder"), contents.source).fingerprint


def model_for_file(fingerprint: bytes, source: str) -> Path:
    """The shipped codec a .qc file was written with (its header's fingerprint), for decompress without --model."""
    codecs = shipped()
    if not codecs:
        raise _none_shipped()
    for codec in codecs:
        if fingerprint_of(codec["path"]) == fingerprint:
            return codec["path"]
    raise ArtifactError(f"{source} was not written by a shipped codec (fingerprint {fingerprint.hex()})",
                        hint="pass the --model it was compressed with")


def open_codec(model: str | Path | None = None, **load_options: Any):
    """The :class:`~qcompile.runtime.codec.session.CodecSession` of ``--model`` (see :func:`resolve_model`)."""
    from qcompile.runtime.codec.session import CodecSession
    from qcompile.runtime.kinds import load

    path = resolve_model(model)
    session = load(path, **load_options)
    if not isinstance(session, CodecSession):
        raise ArtifactError(f"{path} is not a codec artifact but a {type(session).__name__}",
                            hint="pass a .qcodec bundle written by `qcompile codec export`")
    return session
