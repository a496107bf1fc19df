"""
User mistakes in what a recipe was given (flags, a YAML/JSON file, `--config_overrides`, data and search files).

They are `RecipeError`s: a `ValueError`, so library callers catch them as before. From the command line
(`run_from_command_line`) one prints `PROG: error: MESSAGE` without a traceback and exits with status 2, as argparse
does for a bad flag. Every other exception is a bug (or the environment's) and keeps its traceback.
"""

import sys


class RecipeError(ValueError):
    """A mistake in a recipe's input; the message names the argument or file, the value and what is accepted."""


class MissingFileError(RecipeError, FileNotFoundError):
    """A file the user named does not exist (a `FileNotFoundError` too, for code that catches that)."""


def run_from_command_line(main, prog: str) -> int:
    """Runs `main()` on the process's arguments: 0 when it ends, 2 (after one `error:` line) on a `RecipeError`."""
    try:
        main()
    except RecipeError as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 2
    return 0
