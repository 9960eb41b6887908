"""pot: are these two language models the same model?

The functions run pot's commands in-process (the Rust library behind the ``pot`` command), with
the same arguments, defaults and results: ``verify`` returns the JSON report of ``pot verify``
(docs/REPORT.md) as a :class:`Report`, the others the JSON their command prints with ``--json``.
The GIL is released while a command runs; Ctrl-C stops it cleanly and raises KeyboardInterrupt.

Errors are exceptions whose class matches the command's exit code: :class:`UsageError` (2, an
argument pot refuses), :class:`BadInputError` (4, a model, key or file that cannot be used as
given), :class:`MemoryLimitError` (5, refused by the memory plan or stopped by the monitor),
:class:`PotRuntimeError` (6, a failure of the machine or of pot).
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Union

from . import _pot

__version__: str = _pot.__version__

PathLike = Union[str, "os.PathLike[str]"]
#: A master key: a key file's path, its 64 hex digits, or its 32 bytes.
Key = Union[str, bytes, "os.PathLike[str]"]
#: Called with each progress event: a dict with ``event`` = ``stage``, ``fingerprinted`` or
#: ``query`` (the objects of ``pot verify --progress json``).
ProgressCallback = Callable[[Dict[str, Any]], None]


class PotError(Exception):
    """A pot command failed; ``exit_code`` is the code the ``pot`` command would exit with."""

    exit_code: int = 6


class UsageError(PotError, ValueError):
    """An argument pot refuses (exit code 2)."""

    exit_code = 2


class BadInputError(PotError):
    """A model, key, fingerprint or file that cannot be used as given (exit code 4)."""

    exit_code = 4


class MemoryLimitError(PotError, MemoryError):
    """Refused by the memory plan before loading, or stopped by the memory monitor (exit 5)."""

    exit_code = 5


class PotRuntimeError(PotError, RuntimeError):
    """A failure of the machine (I/O, randomness) or of pot itself (exit code 6)."""

    exit_code = 6


_ERRORS = {2: UsageError, 4: BadInputError, 5: MemoryLimitError, 6: PotRuntimeError}


class Report:
    """The report of ``pot verify`` (docs/REPORT.md): the verdict and its statistics as
    attributes, every field by key (``report["security"]``), and the JSON itself."""

    def __init__(self, data: Dict[str, Any]) -> None:
        self._data = data

    @property
    def final_decision(self) -> str:
        """SAME, DIFFERENT or UNDECIDED."""
        return str(self._data["final_decision"])

    @property
    def success(self) -> bool:
        """False when the run failed or was stopped (``error`` says why)."""
        return bool(self._data["success"])

    @property
    def error(self) -> Optional[str]:
        return self._data.get("error")

    @property
    def reason(self) -> Optional[str]:
        """Why the verdict is what it is, in words."""
        return self._data.get("reason")

    def _diff(self, key: str) -> Any:
        diff = self._data.get("enhanced_diff") or {}
        return diff.get(key)

    @property
    def confidence(self) -> Optional[float]:
        """1 - alpha of the mode."""
        return self._diff("confidence")

    @property
    def effect_size(self) -> Optional[float]:
        """The mean score (total variation distance between the two models' next tokens)."""
        return self._diff("effect_size")

    @property
    def interval(self) -> Optional[tuple]:
        """The confidence sequence's interval on the mean score when the test stopped."""
        lower, upper = self._diff("ci_lower"), self._diff("ci_upper")
        return None if lower is None else (lower, upper)

    @property
    def queries(self) -> Optional[int]:
        """Challenges scored before the test stopped."""
        return self._diff("n_effective")

    @property
    def gamma(self) -> Optional[float]:
        """The tolerance on the mean score."""
        return self._diff("gamma")

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def to_dict(self) -> Dict[str, Any]:
        """The report as plain Python values (a copy)."""
        return json.loads(json.dumps(self._data))

    def to_json(self, indent: Optional[int] = 2) -> str:
        """The report as ``pot verify -o`` writes it."""
        return json.dumps(self._data, indent=indent, ensure_ascii=False)

    def __repr__(self) -> str:
        return (
            f"Report(final_decision={self.final_decision!r}, queries={self.queries}, "
            f"effect_size={self.effect_size}, confidence={self.confidence})"
        )


class _KeyFile:
    """The key as ``--key-file``: a path as given, or hex/bytes written to a private temporary
    file (mode 0600) removed afterwards."""

    def __init__(self, key: Optional[Key]) -> None:
        self.path: Optional[str] = None
        self._temp: Optional[str] = None
        if key is None:
            return
        if isinstance(key, (bytes, bytearray)):
            if len(key) != 32:
                raise UsageError(f"a key given as bytes must be 32 bytes, not {len(key)}")
            text = bytes(key).hex()
        elif isinstance(key, str) and len(key) == 64 and all(c in "0123456789abcdefABCDEF" for c in key):
            text = key
        else:
            self.path = os.fspath(key)
            return
        fd, self._temp = tempfile.mkstemp(prefix="pot-key-", suffix=".hex")
        with os.fdopen(fd, "w") as f:  # mkstemp creates it with mode 0600
            f.write(text)
        self.path = self._temp

    def args(self) -> List[str]:
        return [] if self.path is None else ["--key-file", self.path]

    def __enter__(self) -> "_KeyFile":
        return self

    def __exit__(self, *exc: object) -> None:
        if self._temp is not None:
            os.unlink(self._temp)


def _run(argv: Sequence[str], progress: Optional[ProgressCallback] = None) -> tuple:
    """Runs ``pot ARGV``; returns (exit code, JSON outputs) or raises the matching error."""
    on_event = None
    if progress is not None:
        callback = progress

        def on_event(line: str) -> None:
            callback(json.loads(line))

    code, outputs, error = _pot.run([str(a) for a in argv], on_event)
    if error is not None:
        raise _ERRORS.get(code, PotRuntimeError)(error)
    return code, [json.loads(o) for o in outputs]


def _flag(name: str, value: Any) -> List[str]:
    if value is None or value is False:
        return []
    if value is True:
        return [name]
    return [name, str(os.fspath(value) if isinstance(value, os.PathLike) else value)]


def verify(
    model1: Optional[PathLike],
    model2: PathLike,
    *,
    mode: str = "audit",
    key: Optional[Key] = None,
    run_id: str = "verify",
    tolerance: Union[str, float, None] = None,
    deployment: Optional[str] = None,
    reference: Optional[PathLike] = None,
    max_memory_gb: Optional[float] = None,
    threads: Optional[int] = None,
    batch_size: Optional[int] = None,
    enable_8bit: bool = False,
    output: Optional[PathLike] = None,
    html: Optional[PathLike] = None,
    progress: Optional[ProgressCallback] = None,
    extra_args: Sequence[str] = (),
) -> Report:
    """``pot verify``: are ``model1`` and ``model2`` the same model?

    Models are GGUF files, Hugging Face directories, ``ORG/NAME[@REVISION]`` in the Hugging
    Face cache, or (``model2``) a server's address (``extra_args=["--served-api", ...]``).
    ``model1`` may be None with ``reference=`` a saved fingerprint. ``key`` is required unless
    ``output`` is given (a fresh key is then saved beside the report). Other options of the
    command go in ``extra_args``. Returns the report whatever the verdict; raises on errors.
    """
    argv: List[str] = ["verify"]
    argv += _flag("--model1", model1) + ["--model2", os.fspath(model2)]
    argv += _flag("--reference", reference)
    argv += ["--mode", mode, "--run-id", run_id]
    argv += _flag("--tolerance", tolerance) + _flag("--deployment", deployment)
    argv += _flag("--max-memory", max_memory_gb) + _flag("--threads", threads)
    argv += _flag("--batch-size", batch_size) + _flag("--enable-8bit", enable_8bit)
    argv += _flag("-o", output) + _flag("--html", html)
    argv += ["--progress", "json"] if progress is not None else ["--quiet"]
    with _KeyFile(key) as k:
        _, outputs = _run(argv + k.args() + list(extra_args), progress)
    if not outputs:
        raise PotRuntimeError("pot verify produced no report")
    return Report(outputs[-1])


def fingerprint(
    model: PathLike,
    output: PathLike,
    *,
    key: Key,
    mode: str = "audit",
    run_id: str = "verify",
    max_memory_gb: Optional[float] = None,
    extra_args: Sequence[str] = (),
) -> Dict[str, Any]:
    """``pot fingerprint``: saves the model's answers to the run's challenges in ``output``
    (.potfp, authenticated with ``key``) for a later ``verify(None, m, reference=output)``.
    Returns what was written: path, challenges, top_k, commitment, key_id."""
    argv = ["fingerprint", os.fspath(model), "-o", os.fspath(output), "--mode", mode]
    argv += ["--run-id", run_id, "--quiet"] + _flag("--max-memory", max_memory_gb)
    with _KeyFile(key) as k:
        _, outputs = _run(argv + k.args() + list(extra_args))
    return outputs[-1]


def plan(
    model: Optional[PathLike] = None,
    *,
    shape: Optional[str] = None,
    mode: str = "audit",
    max_memory_gb: Optional[float] = None,
    extra_args: Sequence[str] = (),
) -> Dict[str, Any]:
    """``pot plan --json``: memory per strategy, the flags that fit, time per query, for a
    model, a config.json, or a shape (``7b``, ``13b``, ``34b``, ``70b``)."""
    argv = ["plan"] + ([os.fspath(model)] if model is not None else [])
    argv += _flag("--shape", shape) + ["--mode", mode, "--json"]
    argv += _flag("--max-memory", max_memory_gb)
    _, outputs = _run(argv + list(extra_args))
    return outputs[-1]


def decide(
    scores: Sequence[float],
    mode: str = "audit",
    *,
    gamma: Optional[float] = None,
    method: str = "betting",
) -> Dict[str, Any]:
    """``pot decide --json``: the sequential test over ``scores`` in order (verdict, n,
    interval, ...), as if they were a verification's per-challenge scores."""
    fd, path = tempfile.mkstemp(prefix="pot-scores-", suffix=".txt")
    try:
        with os.fdopen(fd, "w") as f:
            f.writelines(f"{float(s)!r}\n" for s in scores)
        argv = ["decide", "--scores", path, "--mode", mode, "--method", method, "--json"]
        _, outputs = _run(argv + _flag("--gamma", gamma))
    finally:
        os.unlink(path)
    return outputs[-1]


def challenges(
    key: Key, run_id: str = "verify", mode: str = "audit", *, n: Optional[int] = None
) -> Dict[str, Any]:
    """``pot challenges --json``: the run's secret prompts and the commitment to them."""
    argv = ["challenges", "--run-id", run_id, "--mode", mode, "--json"] + _flag("-n", n)
    with _KeyFile(key) as k:
        _, outputs = _run(argv + k.args())
    return outputs[-1]


__all__ = [
    "BadInputError",
    "MemoryLimitError",
    "PotError",
    "PotRuntimeError",
    "Report",
    "UsageError",
    "challenges",
    "decide",
    "fingerprint",
    "plan",
    "verify",
]
