"""What sealing a version's record costs: 3,000 files, 40 MB, as a deploy leaves them.

    python bench/seal.py [FILES] [MEGABYTES]

Makes a home in a temporary directory, a first version (every file new: all
hashed), then versions whose files are hard links of the previous one, as
rsync --link-dest leaves them, with one file changed, and with none; prints the
seconds seal() took for each and the size of the manifest it wrote, and verify()
of the last (which hashes everything).
"""

import os
import sys
import tempfile
import time
from pathlib import Path

from plugbox_server import operations, record
from plugbox_server.store import Store


def main(files: int = 3000, megabytes: int = 40) -> None:
    size = megabytes * 1_000_000 // files
    with tempfile.TemporaryDirectory() as scratch:
        home = Path(scratch)
        store = Store(home)

        def version(previous: str | None, changed: int) -> str:
            name, _ = operations.next_version(home)
            directory = store.version_dir(name)
            for i in range(files):
                path = directory / f"d{i % 30}" / f"f{i}.bin"
                path.parent.mkdir(exist_ok=True)
                if previous and i >= changed:
                    os.link(store.version_dir(previous) / path.relative_to(directory), path)
                else:
                    path.write_bytes(os.urandom(size))
            return name

        def timed(what: str, name: str, previous: str | None) -> None:
            began = time.perf_counter()
            record.seal(store, name, previous=previous)
            took = time.perf_counter() - began
            size = (home / "deploy" / ".plugbox" / name / record.MANIFEST).stat().st_size
            print(f"{what:<36} seal {took:6.3f} s   manifest {size:>9,} bytes")

        first = version(None, 0)
        timed(f"first version ({files} new files)", first, None)
        one = version(first, 1)
        timed("one file changed, others linked", one, first)
        none = version(one, 0)
        timed("nothing changed, all linked", none, one)
        timed("nothing changed, no reuse (full)", none, None)
        began = time.perf_counter()
        assert not record.differs(record.verify(store, none))
        print(f"{'verify (hashes every file)':<36}      {time.perf_counter() - began:6.3f} s")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
