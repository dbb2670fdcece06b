"""How many processes and threads a server command may start: a typo's 10,000 forks or threads would take the host
down before the first request or job was served."""

from shared.config import ConfigError

MAX_PROCESSES = 256
MAX_THREADS = 256  # each worker thread keeps a database connection, and may open a second one for a moment


def within(flag: str, variable: str, given: int | None, setting: int, maximum: int) -> int:
    """The count `flag` gave, else the environment's `variable` (`setting`); a ConfigError naming both when it is
    not from 1 to `maximum`."""
    value = setting if given is None else given
    if not 1 <= value <= maximum:
        raise ConfigError(f"{flag} ({variable}) must be between 1 and {maximum}, got {value}")
    return value
