"""Reading a file the operator names on the command line: a regular file, of a bounded size, or one line saying why.

`/dev/zero`, a FIFO or a directory would otherwise hang the command or fill its memory.
"""

import os
import stat

from shared.config import ConfigError


def read_text(path: str | os.PathLike, *, most: int, label: str, encoding: str = "utf-8") -> str:
    """The file's text; ConfigError naming `label` and the path for one that cannot be read, is not a regular file,
    is over `most` bytes, or is not `encoding`."""
    try:
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(f"{label} {path}: is not a regular file")
        if info.st_size > most:
            raise ConfigError(f"{label} {path}: is {info.st_size:,} bytes; at most {most:,} are taken")
        with open(path, encoding=encoding) as file:
            return file.read(most + 1)[:most]  # bounded even if the file grew since
    except OSError as error:
        raise ConfigError(f"{label} {path}: cannot be read: {error.strerror or error}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{label} {path}: is not {encoding.removesuffix('-sig').upper()} text") from None
