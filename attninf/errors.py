"""The one exception a user's mistake raises: the CLI prints its message as a
single line (naming the thing and the fix) instead of a traceback."""


class AttninfError(Exception):
    """A problem the user can fix: bad path, missing column, wrong model kind."""
