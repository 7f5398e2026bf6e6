"""How a command ends: a user's mistake as one red line and status 2, ^C as 130, SIGTERM as 143,
a closed pipe quietly as 141. Light (typer only), so `cnncli --help` stays fast.
"""

from __future__ import annotations

import functools
import os
import sys

import typer

from cnncli.errors import CnncliError
from cnncli.files.atomic import NO_ROOM


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler's kill, `timeout`), handled like ^C: temporary files are removed and
    the last checkpoint is kept, instead of the process vanishing mid-write."""


def raise_terminated(signum, frame):
    """The SIGTERM handler main() installs."""
    raise Terminated()


def user_errors(command):
    """Turn CnncliError into one red line on stderr and exit status 2; running out of memory,
    or of disk space, too; ^C into status 130 and SIGTERM into 143; a closed pipe into a quiet exit (141, like a
    program killed by SIGPIPE)."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except CnncliError as error:
            fail(str(error), 2)
        except MemoryError:
            fail("out of memory; try a smaller --batch-size or train.batch_size, or a smaller network", 2)
        except RuntimeError as error:
            if "can't allocate memory" not in str(error) and type(error).__name__ != "OutOfMemoryError":
                raise
            fail(f"out of memory ({str(error).splitlines()[0]}); try a smaller batch size or network", 2)
        except KeyboardInterrupt as interrupt:
            fail("terminated" if isinstance(interrupt, Terminated) else "interrupted",
                  143 if isinstance(interrupt, Terminated) else 130)
        except BrokenPipeError:  # the reader went away (`| head`): stop quietly, as SIGPIPE would
            from cnncli.output import quiet_closed_pipe

            quiet_closed_pipe()
            raise typer.Exit(141) from None
        except OSError as error:  # a write refused for want of room that no writer named (they do: files.atomic)
            if error.errno not in NO_ROOM:
                raise
            fail(f"{error.filename or 'a file being written'}: {error.strerror}; free some room and try again", 2)

    return wrapper


def fail(message: str, status: int):
    """One red line on stderr (a newline in a file name cannot break it in two, an ESC in it cannot
    act on the terminal: other control characters are escaped as tables escape them), then exit."""
    if status == 2:
        from cnncli.output.tables import shown

        message = shown(f"error: {message}".replace("\n", "\\n"))
    typer.secho(message, fg=typer.colors.RED, err=True)
    raise typer.Exit(status) from None


def exit_now(code: int) -> None:
    """End an interrupted command at once. Its clean-up already ran as the interrupt unwound
    (temporary files removed, the last checkpoint kept); what is left at interpreter exit is
    joining threads, and a process pool stopped mid-work can leave one that never ends (a ^C
    under load hung `cnncli predict` for over a minute once in CI)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe or stream: nothing more to say
            pass
    os._exit(code)
