"""A fleet, measured: plug's own fan-out (`hosts = [...]`) against the Ansible collection.

    python3 bench/fleet.py [--hosts 10,20,30,40,50] [--files N] [--runs K] [--out FILE]

Run as root, from the virtualenv the tests use (plugbox, ansible-core and, to
measure it too, mitogen installed: `pip install -e '.[test]' mitogen`). Starts a
rig (tests/ansible_rig.py): as many throwaway users as the largest count, behind
one sshd on 127.0.0.1, each a "host" with python3 and rsync only. Writes a
project (bench/tree.py, --files files) with hooks that do nothing but exist, a
plugbox.toml whose `hosts` names every rig user (an ssh_config gives each one a
Host block), and an inventory of the same users. Then, for each count N, on the
first N hosts, one file changed before each timed run:

- `plug deploy` with `hosts = [the N hosts]`;
- `ansible-playbook plugbox.deploy.deploy --limit the N hosts`, forks = N;
- the same with Mitogen's strategy (mitogen_linear), when mitogen is installed.

The first run on a host installs plugbox (plug bootstrap, the playbook's own
bootstrap) and is not timed. Each figure is the median of --runs runs (A B C A B
C ...). Prints the table, the seconds each host added (a least-squares line over
the counts) and where the collection overtakes plug's own fan-out, and writes
them as markdown to --out (default bench/results/fleet.md). Uses only public tools:
sshd, ssh, rsync, ansible-playbook, plug. May touch what the rig touches (users
pbx-aNN, /home/pbx-aNN), a temporary directory of its own, and --out.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(HERE), str(ROOT / "tests"), str(ROOT)]

import tree as trees  # noqa: E402
from ansible_rig import Rig  # noqa: E402
from sshd import config_quote  # noqa: E402

BIN = Path(sys.executable).parent


def mitogen_strategy() -> Path | None:
    try:
        import ansible_mitogen
    except ImportError:
        return None
    return Path(ansible_mitogen.__file__).parent / "plugins" / "strategy"


def write_project(root: Path, files: int, users: list[str]) -> trees.Tree:
    tree = trees.generate(root / "app", files, max(files / 100, 0.5))
    hooks = {"post_upload": ["true"], "start": ["true"], "check": ["true"]}
    (root / "plugbox.toml").write_text(
        "[service]\nhosts = " + json.dumps(users) + "\n[build]\nupload = [\"app\"]\n[hooks]\n"
        + "".join(f"{k} = {json.dumps(v)}\n" for k, v in hooks.items()))
    return tree


def write_ssh_config(rig: Rig, path: Path) -> Path:
    """One Host block per rig user, as a team's ~/.ssh/config would name its machines."""
    blocks = [f"Host {user}\n    HostName 127.0.0.1\n    Port {rig.sshd.port}\n    User {user}\n"
              for user in rig.users]
    blocks.append("Host *\n"
                  f"    IdentityFile {config_quote(str(rig.key))}\n    IdentitiesOnly yes\n"
                  f"    UserKnownHostsFile {config_quote(str(rig.known_hosts))}\n"
                  "    GlobalKnownHostsFile /dev/null\n    StrictHostKeyChecking yes\n"
                  "    UpdateHostKeys no\n    BatchMode yes\n")
    path.write_text("\n".join(blocks))
    return path


class Fleet:
    def __init__(self, rig: Rig, project: Path, ssh_config: Path):
        self.rig, self.project, self.ssh_config = rig, project, ssh_config
        self.mitogen = mitogen_strategy()

    def plug(self, hosts: list[str], *command: str) -> float:
        config = self.project / f"plugbox-{len(hosts)}.toml"
        text = (self.project / "plugbox.toml").read_text()
        config.write_text(text.replace(text.splitlines()[1], "hosts = " + json.dumps(hosts)))
        env = {**os.environ, "PLUG_SSH_CONFIG": str(self.ssh_config)}
        env.pop("PLUG_SSH_OPTIONS", None)
        return self._timed([str(BIN / "plug"), *command, "-c", str(config)], env)

    def ansible(self, hosts: list[str], mitogen: bool = False) -> float:
        env = self.rig.env(ANSIBLE_COLLECTIONS_PATH=str(ROOT), ANSIBLE_FORKS=str(len(hosts)))
        if mitogen:
            env.update(ANSIBLE_STRATEGY_PLUGINS=str(self.mitogen), ANSIBLE_STRATEGY="mitogen_linear")
        return self._timed([str(BIN / "ansible-playbook"), "-i", str(self.rig.inventory),
                            "plugbox.deploy.deploy", "-e", f"plugbox_project={self.project}",
                            "--limit", ",".join(hosts)], env)

    def _timed(self, argv: list[str], env: dict[str, str]) -> float:
        began = time.monotonic()
        done = subprocess.run(argv, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                              timeout=1800)
        took = time.monotonic() - began
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(argv[:3])}: exit {done.returncode}\n{done.stdout[-3000:]}\n"
                             f"{done.stderr[-3000:]}")
        return took


def slope(points: list[tuple[int, float]]) -> tuple[float, float]:
    """(seconds per host added, seconds at zero hosts): a least-squares line."""
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    b = sum((x - mx) * (y - my) for x, y in points) / sxx if sxx else 0.0
    return b, my - b * mx


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", default="10,20,30,40,50")
    parser.add_argument("--files", type=int, default=300)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "fleet.md")
    args = parser.parse_args()
    counts = sorted({int(c) for c in args.hosts.split(",")})
    if os.geteuid() != 0:
        print("fleet: run as root: the rig makes users", file=sys.stderr)
        return 1
    scratch = Path(tempfile.mkdtemp(prefix="plugbox-fleet-"))
    rows: dict[str, dict[int, float]] = {"plug, hosts = [...]": {}, "ansible-playbook": {}}
    try:
        with Rig(scratch / "rig", max(counts)) as rig:
            tree = write_project(scratch / "project", args.files, rig.users)
            fleet = Fleet(rig, scratch / "project", write_ssh_config(rig, scratch / "ssh_config"))
            methods = {"plug, hosts = [...]": lambda hosts: fleet.plug(hosts, "deploy"),
                       "ansible-playbook": lambda hosts: fleet.ansible(hosts)}
            if fleet.mitogen:
                rows["ansible-playbook, Mitogen"] = {}
                methods["ansible-playbook, Mitogen"] = lambda hosts: fleet.ansible(hosts, mitogen=True)
            everyone = rig.users
            fleet.plug(everyone, "bootstrap")
            fleet.ansible(everyone)   # the collection's own bootstrap finds plugbox current
            for count in counts:
                hosts = everyone[:count]
                took: dict[str, list[float]] = {name: [] for name in methods}
                for _ in range(args.runs):
                    for name, method in methods.items():
                        tree.change_one()
                        subprocess.run(["sync"], check=False)
                        took[name].append(method(hosts))
                for name in methods:
                    rows[name][count] = statistics.median(took[name])
                    print(f"{count:3d} hosts  {name:28s} {rows[name][count]:6.1f} s", flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    lines = report(rows, counts, args)
    print("\n".join(lines))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    return 0


def report(rows: dict[str, dict[int, float]], counts: list[int], args) -> list[str]:
    when = datetime.date.today().isoformat()
    lines = [f"# A fleet: plug's own fan-out against the Ansible collection", "",
             f"Run on {when}: {os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}; "
             f"every host a user of one sshd on 127.0.0.1 (they share this machine's cores and disk); "
             f"{args.files} files, one changed before each deploy; median of {args.runs} run(s); "
             "Ansible with forks = the number of hosts.", "",
             "| hosts | " + " | ".join(rows) + " |", "|---:|" + "---:|" * len(rows)]
    for count in counts:
        lines.append(f"| {count} | " + " | ".join(f"{rows[name][count]:.1f} s" for name in rows) + " |")
    lines.append("")
    lines.append("Seconds per host added (least squares over the counts):")
    lines.append("")
    lines += [f"- {name}: {slope(sorted(row.items()))[0]:.2f} s per host, {slope(sorted(row.items()))[1]:.1f} s fixed"
              for name, row in rows.items()]
    plug = rows["plug, hosts = [...]"]
    for name, row in rows.items():
        if name.startswith("ansible"):
            faster = [c for c in counts if row[c] < plug[c]]
            lines.append(f"- {name} is faster than plug's fan-out from "
                         + (f"{faster[0]} hosts on" if faster else f"none of the counts measured (up to {counts[-1]})"))
    return lines


if __name__ == "__main__":
    raise SystemExit(main())
