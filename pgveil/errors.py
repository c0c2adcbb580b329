"""Errors that pgveil reports to a person as one line, without a traceback."""


class PgveilError(Exception):
    """A problem the user can fix; the message names the problem and the fix."""
