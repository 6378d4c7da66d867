"""The one exception a user's mistake raises: the CLI prints its message as a
single line (naming the thing and the fix) instead of a traceback."""
import functools
import sys


class AttninfError(Exception):
    """A problem the user can fix: bad path, missing column, wrong model kind."""


def one_line(e: BaseException) -> str:
    """An exception from a library as one line: its type and first line."""
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0] if lines else ''}".strip()


def user_errors(fn):
    """CLI commands: a user's mistake (AttninfError) becomes one line on stderr
    and exit status 2; Ctrl-C exits 130 without a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        import click

        try:
            return fn(*args, **kwargs)
        except AttninfError as e:
            click.echo(f"attninf: error: {e}", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.echo("attninf: interrupted", err=True)
            sys.exit(130)

    return wrapper
