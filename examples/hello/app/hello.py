"""The example service: says which version it runs from."""

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent


def main() -> int:
    version = os.environ.get("PLUGBOX_VERSION") or HERE.name
    print(f"hello from version {version}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
