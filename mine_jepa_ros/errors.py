"""The package's expected-failure exceptions; the CLI prints them as one line, no traceback."""


class MineJepaError(Exception):
    """Base class of every expected failure (bad file, bad argument, bad checkpoint)."""


class UserError(MineJepaError):
    """A bad argument or an impossible request."""


class BagError(MineJepaError):
    """A bag that cannot be used at all (missing, unreadable, no such topic); names the path."""


class CheckpointError(MineJepaError):
    """A checkpoint that is missing, corrupt or does not fit; names the file and the problem."""
