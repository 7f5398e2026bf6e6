"""The one exception type for mistakes a user can make (bad recipe, bad file, bad flag)."""


class CnncliError(Exception):
    """A user-facing error: the message names the file, line or key at fault and what to do.

    The CLI prints it as one line and exits with status 2; library callers can catch it.
    """
