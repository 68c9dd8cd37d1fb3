"""A deterministic synthetic service tree for the benchmark.

Writes only under the directory it is given. The same (files, size, seed) always
gives the same paths, sizes and bytes, so two runs of the benchmark upload the same
tree. Its shape is that of a typical service:

- many small modules (about 96% of the files), in packages of about 25 files
  two levels deep, together about 30% of the bytes;
- some assets of 50-500 kB (about 45% of the bytes), ten to a directory;
- a few multi-MB files (about 25% of the bytes).

Contents are random bytes (incompressible, so nothing is gained by compression
along the way); modules are written as hex text.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from pathlib import Path

KB = 1000
MB = 1000 * KB
MODULES_PER_DIR = 25
ASSETS_PER_DIR = 10


@dataclass
class Tree:
    root: Path
    files: int = 0
    size: int = 0
    directories: int = 0
    modules: list[Path] = field(default_factory=list)  # candidates for a one-file change
    _changes: int = 0

    def change_one(self) -> Path:
        """Rewrite one small module (a new content of the same size, a new mtime)."""
        path = self.modules[(self._changes * 7919) % len(self.modules)]
        self._changes += 1
        size = path.stat().st_size
        rng = random.Random(f"{path.name}/{self._changes}")
        path.write_bytes(_text(rng, size))
        return path


def _text(rng: random.Random, size: int) -> bytes:
    return rng.randbytes((size + 1) // 2).hex().encode()[:size]


def plan(files: int, size: int, seed: int = 0) -> list[tuple[str, int, str]]:
    """(relative path, size in bytes, kind) for every file of the tree."""
    rng = random.Random(seed)
    big_count = 3 if files >= 50 else 1
    big_bytes = size * 25 // 100
    asset_bytes = size * 45 // 100
    asset_count = max(1, min(files // 10, round(asset_bytes / (275 * KB))))
    module_count = max(1, files - big_count - asset_count)
    module_bytes = max(module_count * 100, size - big_bytes - asset_bytes)

    entries = []
    for i in range(big_count):
        entries.append((f"data/blob-{i:02d}.bin", big_bytes // big_count, "big"))
    asset_sizes = [rng.randint(50 * KB, 500 * KB) for _ in range(asset_count)]
    scale = asset_bytes / sum(asset_sizes)
    for i, s in enumerate(asset_sizes):
        s = min(500 * KB, max(50 * KB, int(s * scale)))
        entries.append((f"static/set-{i // ASSETS_PER_DIR:03d}/asset-{i:04d}.dat", s, "asset"))
    average = module_bytes // module_count
    for i in range(module_count):
        s = rng.randint(max(1, average // 4), max(2, average * 7 // 4))
        package, sub = divmod(i // MODULES_PER_DIR, 4)
        entries.append((f"app/pkg{package:03d}/sub{sub}/module_{i:05d}.py", s, "module"))
    return entries


def generate(root: Path, files: int, size_mb: float, seed: int = 0) -> Tree:
    """Write the tree into `root` (created; must not exist) and describe it."""
    root.mkdir(parents=True)
    tree = Tree(root)
    rng = random.Random(seed + 1)
    made = set()
    written = []
    for relative, size, kind in plan(files, int(size_mb * MB), seed):
        path = root / relative
        written.append(path)
        if path.parent not in made:
            path.parent.mkdir(parents=True, exist_ok=True)
            made.add(path.parent)
        data = _text(rng, size) if kind == "module" else rng.randbytes(size)
        path.write_bytes(data)
        tree.files += 1
        tree.size += size
        if kind == "module":
            tree.modules.append(path)
    # A fixed mtime: the same tree generated twice looks the same to rsync.
    for path in written:
        os.utime(path, (1_700_000_000, 1_700_000_000))
    tree.directories = sum(1 for p in root.rglob("*") if p.is_dir()) + 1
    return tree
