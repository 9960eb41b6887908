"""The native module of the pot package (crates/pot-python): pot's commands, in-process."""

from typing import Callable, List, Optional, Sequence, Tuple

__version__: str

def run(
    argv: Sequence[str], progress: Optional[Callable[[str], None]] = None
) -> Tuple[int, List[str], Optional[str]]:
    """Runs ``pot ARGV`` (without the program name) with the GIL released.

    Returns the exit code, the command's JSON outputs as text (what ``--json`` prints, or the
    report of ``verify``) and, when it failed, its error message (the code says which kind).
    ``progress`` is called with each progress event as a JSON string. Ctrl-C stops the run
    cleanly and raises KeyboardInterrupt; an exception raised by ``progress`` stops it and is
    re-raised.
    """
