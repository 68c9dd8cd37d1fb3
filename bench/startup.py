"""What `plugbox --serve` costs before it answers: its hello, and each command's imports.

    python3 bench/startup.py [--plugbox FILE] [--python PYTHON] [--runs N] [--importtime]

Installs plugbox as `plug bootstrap` does (the zipapp it sends, unpacked and
compiled by the host's python3: argv.INSTALL_PLUGBOX) in a temporary directory,
or takes --plugbox (a script as bootstrap writes, or a zipapp an older plug
installed), makes a home of 10 versions there, and runs `PYTHON -I -S PLUGBOX
--serve N` (--python: the host's python3, default this one), as plug does over
ssh, for:

- hello: the bare exchange, plugbox's hello then its exit;
- status: the versions of that home;
- rollback: between its two newest versions, in turn (no hooks).

For each it prints the median time from the start of the process to its hello
line on stdout, and to its exit (which includes the command's work), over --runs
runs interleaved (hello, status, rollback, hello, ...). With --importtime, it
also runs each once under `-X importtime` and prints the modules imported, the
sum of their own times and the heaviest ones by cumulative time (what python
prints, in microseconds; -X importtime itself slows imports down).

Standard library only; writes nothing but its temporary directory.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

from plugbox_server import protocol  # noqa: E402


def requests(home: Path, names: list[str]):
    """The requests to time, by name; rollback alternates between the two newest."""
    turn = [0]

    def rollback() -> dict:
        turn[0] += 1
        return {"command": "rollback", "home": str(home), "version": names[-1 - turn[0] % 2],
                "origin": {"user": "bench", "machine": "bench"}}

    return {
        "hello": lambda: {"command": "hello"},
        "status": lambda: {"command": "status", "home": str(home)},
        "rollback": rollback,
    }


def once(argv: list[str], request: dict, env: dict) -> tuple[float, float, str]:
    """(seconds to the hello line, seconds to the exit, stderr)."""
    began = time.perf_counter()
    process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, env=env)
    line = process.stdout.readline()
    hello = time.perf_counter() - began
    process.stdin.write(protocol.encode(request))
    process.stdin.close()
    rest = process.stdout.read()
    err = process.stderr.read().decode(errors="replace")
    process.wait()
    took = time.perf_counter() - began
    if not line.startswith(b'{"hello"'):
        raise SystemExit(f"{' '.join(argv)}: no hello, but {line[:200]!r}; {err[-2000:]}")
    last = json.loads(rest.splitlines()[-1])
    if last.get("exit") != 0:
        raise SystemExit(f"{request['command']}: exit {last}; {err[-2000:]}")
    return hello, took, err


def importtime(stderr: str) -> tuple[int, int, list[tuple[int, str]]]:
    """(modules, sum of self times in µs, [(cumulative µs, module)] of the top-level imports)."""
    count, total, top = 0, 0, []
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        own, cumulative, name = line[len("import time:"):].split("|")
        count += 1
        total += int(own)
        if not name.startswith("  "):
            top.append((int(cumulative), name.strip()))
    return count, total, sorted(top, reverse=True)


def install(scratch: Path, python: str) -> Path:
    """plugbox installed in `scratch`/login as `plug bootstrap` installs it, by `python`."""
    from plugbox_client import argv as A
    from plugbox_client import bootstrap

    archive = bootstrap.build(scratch / "plugbox.pyz")
    bin_dir = scratch / "bin"
    bin_dir.mkdir()
    (bin_dir / "python3").symlink_to(python)
    with open(archive, "rb") as stdin:
        subprocess.run(["sh", "-c", A.INSTALL_PLUGBOX, "plug-bootstrap", str(scratch / "home"), "login"],
                       stdin=stdin, check=True, stdout=subprocess.DEVNULL,
                       env={"HOME": str(scratch / "login"), "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}"})
    return scratch / "login" / ".local" / "bin" / "plugbox"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench/startup.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--plugbox", type=Path, help="the plugbox to run (default: installed now, as bootstrap does)")
    p.add_argument("--python", default=sys.executable, help="the host's python3 [this one]")
    p.add_argument("--runs", type=int, default=20, help="runs of each command; the median is printed [20]")
    p.add_argument("--importtime", action="store_true", help="also show each command's imports")
    p.add_argument("--top", type=int, default=12, help="heaviest top-level imports shown [12]")
    args = p.parse_args(argv)

    import run  # bench/run.py: the synthetic home

    with tempfile.TemporaryDirectory(prefix="plugbox-startup-") as scratch:
        scratch = Path(scratch)
        plugbox = args.plugbox or install(scratch, args.python)
        home = scratch / "versions"
        run.synthetic_home(home, 10)
        names = sorted(p.name for p in (home / "deploy").iterdir() if p.name[0].isdigit())
        argv = [args.python, "-I", "-S", str(plugbox), *protocol.ARGS]
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(scratch)}
        made = requests(home, names)
        for name, request in made.items():  # once, untimed: caches of the first run
            once(argv, request(), env)
        times = {name: ([], []) for name in made}
        for _ in range(args.runs):
            for name, request in made.items():
                hello, took, _ = once(argv, request(), env)
                times[name][0].append(hello)
                times[name][1].append(took)
        print(f"{' '.join(argv[:3])} {plugbox.name} --serve, median of {args.runs}:")
        for name, (hellos, exits) in times.items():
            print(f"  {name:<9} hello {statistics.median(hellos) * 1000:6.1f} ms   "
                  f"exit {statistics.median(exits) * 1000:6.1f} ms")
        if args.importtime:
            for name, request in made.items():
                _, _, err = once([args.python, "-X", "importtime", *argv[1:]], request(), env)
                count, total, top = importtime(err)
                print(f"\n{name}: {count} modules imported, {total / 1000:.1f} ms of imports "
                      "(sum of self times under -X importtime); heaviest top-level, cumulative:")
                for cumulative, module in top[:args.top]:
                    print(f"  {cumulative / 1000:6.1f} ms  {module}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
