"""The package's expected failures: one root, one class per kind of bad input.

Every failure a user can cause (a bad file, argument, parameter, recipe or store) raises a
subclass of :class:`MineJepaError` whose message names the file, argument or field and the
problem. ``mine-jepa`` and ``mine_jepa_node`` catch :class:`MineJepaError` (and :class:`OSError`
for files) and print that one line; any other exception is a bug and keeps its traceback
(``mine-jepa --debug`` shows the traceback of expected errors too). See ``docs/design.md``.
"""


class MineJepaError(Exception):
    """Root of every expected failure."""


class UserError(MineJepaError):
    """A bad argument or an impossible request (names the argument or path)."""


class ParameterError(UserError):
    """An invalid node parameter value; the message starts with the parameter's name."""


class RecipeError(UserError):
    """A training recipe (YAML) with a missing, unknown or badly typed key; names the file and the key."""


class InputError(MineJepaError):
    """A sensor message that cannot be used (bad encoding, bad size, ...); names the field.

    The pipeline never raises it to its caller: the message is skipped and counted under ``reason``
    (``"field NAME"`` unless given)."""

    def __init__(self, field: str, problem: str, reason: str | None = None) -> None:
        super().__init__(f"field '{field}': {problem}")
        self.field = field
        self.problem = problem
        self.reason = reason or f"field {field}"


class BagError(MineJepaError):
    """A bag that cannot be used at all (missing, unreadable, no such topic); names the path."""


class XtfError(MineJepaError):
    """An XTF recording that cannot be read or holds no usable ping; names the path."""


class CheckpointError(MineJepaError):
    """A checkpoint or model file that is missing, corrupt or does not fit; names the file and the problem."""


class StoreError(MineJepaError):
    """A patch store that is missing, corrupt or unsuitable for the request; names the store."""
