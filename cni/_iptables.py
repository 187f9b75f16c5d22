"""iptables / ip6tables through their command-line tools.

We always run the `iptables` command (never nft directly), so whichever
backend Debian's alternatives selected — iptables-nft or iptables-legacy —
is used, exactly as the reference plugins (go-iptables) do. `--wait` makes the
legacy backend queue on the xtables lock; the nft backend accepts and ignores
it. Rules are written in the same shape as the reference plugins so the two
can tear down each other's chains.
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

    def run(self, *args: str) -> str:
        proc = self._run(list(args))
        if proc.returncode != 0:
            raise IPTablesError([self.binary, *args], proc.returncode, proc.stderr)
        return proc.stdout

    def usable(self) -> bool:
        """Can we use the nat table at all (kernel support, binary present)?"""
        return self._run(["-t", "nat", "-S", "OUTPUT"]).returncode == 0

    def chain_exists(self, table: str, chain: str) -> bool:
        return self._run(["-t", table, "-S", chain]).returncode == 0

    def ensure_chain(self, table: str, chain: str) -> None:
        if self.chain_exists(table, chain):
            return
        proc = self._run(["-t", table, "-N", chain])
        # A concurrent ADD may have created it between our check and -N.
        if proc.returncode != 0 and not self.chain_exists(table, chain):
            raise IPTablesError(
                [self.binary, "-t", table, "-N", chain], proc.returncode, proc.stderr
            )

    def exists(self, table: str, chain: str, rule: list[str]) -> bool:
        proc = self._run(["-t", table, "-C", chain, *rule])
        if proc.returncode == 0:
            return True
        if proc.returncode == 1:
            return False
        raise IPTablesError(
            [self.binary, "-t", table, "-C", chain, *rule], proc.returncode, proc.stderr
        )

    def insert_unique(self, table: str, chain: str, rule: list[str], prepend: bool = False) -> None:
        if self.exists(table, chain, rule):
            return
        if prepend:
            self.run("-t", table, "-I", chain, "1", *rule)
        else:
            self.run("-t", table, "-A", chain, *rule)

    def append(self, table: str, chain: str, rule: list[str]) -> None:
        self.run("-t", table, "-A", chain, *rule)

    def delete_rule(self, table: str, chain: str, rule: list[str]) -> None:
        """Delete one rule; a missing rule or chain is not an error (teardown)."""
        self._run(["-t", table, "-D", chain, *rule])

    def list_rules(self, table: str, chain: str | None = None) -> list[str]:
        """`iptables -S` lines; [] if the chain does not exist."""
        args = ["-t", table, "-S"]
        if chain is not None:
            args.append(chain)
        proc = self._run(args)
        if proc.returncode != 0:
            return []
        return [line for line in proc.stdout.splitlines() if line]

    def delete_references(self, table: str, entry_chain: str, target: str) -> None:
        """Delete every rule in entry_chain that jumps to `target`.

        Found by listing rather than by rebuilding the exact rule spec, so a
        rule written by another plugin version (other comment, other match
        order) is removed too.
        """
        for line in self.list_rules(table, entry_chain):
            words = shlex.split(line)
            if len(words) < 2 or words[0] != "-A" or words[1] != entry_chain:
                continue
            if "-j" in words and words[words.index("-j") + 1 :][:1] == [target]:
                self.delete_rule(table, entry_chain, words[2:])

    def clear_and_delete_chain(self, table: str, chain: str) -> None:
        """Flush and delete; a chain that is already gone is fine (teardown)."""
        # Errors only matter if the chain still exists afterwards: checking
        # up front would cost one more exec on every call.
        self._run(["-t", table, "-F", chain])
        proc = self._run(["-t", table, "-X", chain])
        if proc.returncode != 0 and self.chain_exists(table, chain):
            raise IPTablesError(
                [self.binary, "-t", table, "-X", chain], proc.returncode, proc.stderr
            )
