"""Files that hold secrets or data are for their owner only: directories 0700, files 0600, from the first byte.

The data dir holds the SQLite file, the generated operator and secret keys, the embedded Redis socket and
the dev outbox; nothing in it is another local user's business. Modes are set when a path is created (an
existing directory an operator chose, e.g. one shared with a backup group, is left as it is). A file is
created with its mode (os.open), never written first and narrowed after, so no reader can slip in between.
"""

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

DIRECTORY_MODE = 0o700
FILE_MODE = 0o600


def private_directory(path: Path) -> Path:
    """Create `path` and any missing parent as 0700 (whatever the umask); existing ones are left alone."""
    missing = [directory for directory in (path, *path.parents) if not directory.exists()]
    for directory in reversed(missing):
        directory.mkdir(mode=DIRECTORY_MODE, exist_ok=True)
        directory.chmod(DIRECTORY_MODE)
    return path


def private_file(path: Path) -> Path:
    """Create an empty 0600 file at `path` if there is none (its directory as `private_directory` does)."""
    private_directory(path.parent)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        return path
    os.fchmod(descriptor, FILE_MODE)  # exactly 0600, whatever the umask
    os.close(descriptor)
    return path


def written_once(path: Path, make: Callable[[], str]) -> str:
    """The text of `path`, which the first caller writes with `make()`; concurrent first callers agree.

    The text goes to a private temporary file that is then hard-linked into place: `path` appears whole or
    not at all, and a process that loses the race reads the winner's text.
    """
    if not path.exists():
        private_directory(path.parent)
        descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # 0600, a unique name
        try:
            with os.fdopen(descriptor, "w") as file:
                file.write(make() + "\n")
            os.link(temporary, path)
        except FileExistsError:
            pass
        finally:
            os.unlink(temporary)
    return path.read_text().strip()
