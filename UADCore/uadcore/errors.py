"""Errors that mean "the input is wrong", as opposed to a bug in UAD.

The CLI turns every `UADError` into exit code 2 and one line on stderr; the message
must name the file and say what is wrong with it.
"""


class UADError(Exception):
    """Bad input: a file, folder, manifest or option the user can fix."""


class ScanError(UADError):
    """A scan or mask file that cannot be used (unreadable, wrong shape, bad values)."""


class ManifestError(UADError):
    """A folder or manifest CSV that does not describe a usable data set."""


class UADWarning(UserWarning):
    """Something the user should know that does not stop the command (a scan left
    out, a threshold resting on few scans). The CLI shows each as one line on
    stderr; library warnings are hidden unless --debug (see `uadcore.cli`)."""


def warn(message: str) -> None:
    """Tell the user ``message`` (one line, naming the file it is about)."""
    import warnings

    warnings.warn(message, UADWarning, stacklevel=2)
