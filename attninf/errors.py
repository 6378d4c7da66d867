"""The one exception a user's mistake raises: the CLI prints its message as a
single line (naming the thing and the fix) instead of a traceback."""
import functools
import sys


class AttninfError(Exception):
    """A problem the user can fix: bad path, missing column, wrong model kind."""


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
