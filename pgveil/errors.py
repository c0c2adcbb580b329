"""Errors that pgveil reports to a person as one line, without a traceback."""


class PgveilError(Exception):
    """A problem the user can fix; the message names the problem and the fix."""


def server_message(error: BaseException) -> str:
    """A database error's own message, every line of it (a refusal may list several
    problems), without the statement context psycopg appends."""
    primary = getattr(getattr(error, "diag", None), "message_primary", None)
    if primary:
        return str(primary)
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
