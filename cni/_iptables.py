"""iptables / ip6tables through their command-line tools.

We always run the iptables tools (`iptables`, and its `-save` and `-restore`
siblings, never nft directly), so whichever backend Debian's alternatives
selected — iptables-nft or iptables-legacy — is used, exactly as the reference
plugins (go-iptables) do. `--wait` makes the legacy backend queue on the
xtables lock; the nft backend accepts and ignores it. The hot paths read a
table with one `iptables-save` and write with one `iptables-restore --noflush`
transaction; `-C` remains for CHECK.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field

from cni.errors import CNIError, ErrorCode

# Tests may point these at iptables-legacy / iptables-nft explicitly.
BINARIES: dict[int, str] = {4: "iptables", 6: "ip6tables"}

# Plugins may be exec'd with a minimal PATH; the tools live in sbin.
_EXTRA_PATH = "/usr/local/sbin:/usr/sbin:/sbin:/usr/local/bin:/usr/bin:/bin"


class IPTablesError(CNIError):
    def __init__(self, argv: list[str], returncode: int, stderr: str) -> None:
        super().__init__(
            ErrorCode.INTERNAL,
            f"running {shlex.join(argv)} failed (exit {returncode}): {stderr.strip()}",
        )
        self.returncode = returncode
        self.stderr = stderr


def _find(binary: str) -> str:
    if os.path.isabs(binary):
        return binary
    path = os.environ.get("PATH", "") + ":" + _EXTRA_PATH
    found = shutil.which(binary, path=path)
    if found is None:
        raise CNIError(ErrorCode.INTERNAL, f"failed to locate {binary} in {path}")
    return found


def restore_word(word: str) -> str:
    """One word quoted as iptables-save writes it (iptables-restore reads only double quotes)."""
    if word and not any(c in word for c in " \t\"'\\"):
        return word
    return '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass
class Snapshot:
    """One table as iptables-save printed it: chain names and each chain's rules (words after
    `-A CHAIN`), in order. Rules are compared word for word, so rules we write are spelled in
    the order iptables-save prints them."""

    chains: set[str] = field(default_factory=set)
    rules: dict[str, list[list[str]]] = field(default_factory=dict)

    def has(self, chain: str, rule: list[str]) -> bool:
        return rule in self.rules.get(chain, [])

    def jumps_to(self, chain: str, target: str) -> list[list[str]]:
        return [r for r in self.rules.get(chain, []) if _target(r) == target]


def _target(rule: list[str]) -> str:
    return rule[rule.index("-j") + 1] if "-j" in rule[:-1] else ""


class IPTables:
    def __init__(self, version: int) -> None:
        self.version = version
        self.binary = _find(BINARIES[version])
        # iptables-legacy -> iptables-legacy-save, ip6tables -> ip6tables-save: the same backend.
        name = os.path.basename(BINARIES[version])
        family, _, backend = name.partition("-")
        suffix = f"-{backend}" if backend else ""
        self._save = os.path.join(os.path.dirname(self.binary), f"{family}{suffix}-save")
        self._restore = os.path.join(os.path.dirname(self.binary), f"{family}{suffix}-restore")

    def save(self, table: str) -> Snapshot:
        """The whole table in one exec (about the cost of a single `iptables -C`)."""
        argv = [self._save, "-t", table]
        proc = subprocess.run(
            argv, capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL
        )
        if proc.returncode != 0:
            raise IPTablesError(argv, proc.returncode, proc.stderr)
        snap = Snapshot()
        for line in proc.stdout.splitlines():
            if line.startswith(":"):
                snap.chains.add(line[1:].split(" ", 1)[0])
            elif line.startswith("-A "):
                words = shlex.split(line)
                snap.rules.setdefault(words[1], []).append(words[2:])
        return snap

    def restore(self, table: str, commands: list[list[str]]) -> None:
        """Apply commands (["-A", chain, ...], ["-N", chain], ...) in one transaction on top of
        the table (--noflush): all of them or, if one fails, none."""
        if not commands:
            return
        text = f"*{table}\n"
        for cmd in commands:
            text += " ".join(restore_word(w) for w in cmd) + "\n"
        text += "COMMIT\n"
        argv = [self._restore, "--wait", "--noflush"]
        proc = subprocess.run(argv, input=text, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise IPTablesError(argv, proc.returncode, f"{proc.stderr.strip()} (input: {text!r})")

    def _run(self, args: list[str]) -> subprocess.CompletedProcess[str]:
        argv = [self.binary, "--wait", *args]
        return subprocess.run(
            argv,
            capture_output=True,
            text=True,
            check=False,
            stdin=subprocess.DEVNULL,
        )

    def chain_exists(self, table: str, chain: str) -> bool:
        return self._run(["-t", table, "-S", chain]).returncode == 0

    def exists(self, table: str, chain: str, rule: list[str]) -> bool:
        proc = self._run(["-t", table, "-C", chain, *rule])
        if proc.returncode == 0:
            return True
        if proc.returncode == 1:
            return False
        raise IPTablesError(
            [self.binary, "-t", table, "-C", chain, *rule], proc.returncode, proc.stderr
        )
