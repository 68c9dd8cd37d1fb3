"""The `plugbox` executable: the machine-facing mode without typer, else the CLI."""

import sys


def main() -> None:
    if sys.argv[1:2] == ["--serve"]:
        from plugbox_server import serve

        sys.exit(serve.main(sys.argv[2:]))
    from plugbox_server.cli import main as cli

    cli()
