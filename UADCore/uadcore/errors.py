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
