"""A small Dockerfile reader for the deploy tests: stages, build arguments, and what
the instructions of one image set (ENV, pip installs, COPY sources, ENTRYPOINT...).

It reads what this project's Dockerfile uses, not the whole syntax: logical lines
(continuations joined, comments dropped), global `ARG`s that `FROM` may name, and
`$VAR` / `${VAR}` in `FROM` and in `RUN` words.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

Instruction = tuple[str, str]  # (INSTRUCTION, its arguments)

_VARIABLE = re.compile(
    r"\$(?:\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)\}|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)


def expand(text: str, values: dict[str, str]) -> str:
    """`$VAR` and `${VAR}` replaced from `values`; unknown ones are left as written."""

    def value(m: re.Match[str]) -> str:
        name = m.group("braced") or m.group("bare")
        return values.get(name, m.group(0))

    return _VARIABLE.sub(value, text)


@dataclass
class Stage:
    name: str
    base: str  # as written: it may name a global ARG, or an earlier stage
    instructions: list[Instruction] = field(default_factory=list)


@dataclass
class Dockerfile:
    path: Path
    args: dict[str, str]  # global ARGs (before the first FROM) and their defaults
    stages: dict[str, Stage]  # by name; unnamed stages by their index

    @classmethod
    def read(cls, path: Path) -> Dockerfile:
        args: dict[str, str] = {}
        stages: dict[str, Stage] = {}
        current: Stage | None = None
        for text in _logical_lines(path.read_text()):
            instr, _, rest = text.partition(" ")
            instr, rest = instr.upper(), rest.strip()
            if instr == "FROM":
                words = [w for w in rest.split() if not w.startswith("--")]
                named = len(words) >= 3 and words[1].upper() == "AS"
                name = words[2] if named else str(len(stages))
                current = stages[name] = Stage(name, words[0])
            elif current is not None:
                current.instructions.append((instr, rest))
            elif instr == "ARG":
                key, _, default = rest.partition("=")
                args[key] = default
        return cls(path, args, stages)

    @property
    def last_stage(self) -> str:
        return list(self.stages)[-1]

    def chain(
        self, target: str | None = None, build_args: dict[str, str] | None = None
    ) -> list[Stage]:
        """The stages `target` (default: the last) is built from, first to last, with
        `FROM` resolved through the global ARGs and the build's arguments."""
        values = {**self.args, **(build_args or {})}
        chain: list[Stage] = []
        name: str | None = target or self.last_stage
        while name in self.stages:
            stage = self.stages[name]
            chain.insert(0, stage)
            name = expand(stage.base, values)
        return chain

    def base_image(
        self, target: str | None = None, build_args: dict[str, str] | None = None
    ) -> str:
        """The image the build starts from, once every stage name is followed."""
        values = {**self.args, **(build_args or {})}
        return expand(self.chain(target, build_args)[0].base, values)

    def instructions(
        self, target: str | None = None, build_args: dict[str, str] | None = None
    ) -> list[Instruction]:
        """Every instruction that makes up the image, in build order."""
        return [ins for stage in self.chain(target, build_args) for ins in stage.instructions]


def _logical_lines(text: str) -> list[str]:
    lines: list[str] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue  # comments may sit inside a continued instruction too
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        lines.append(pending + stripped)
        pending = ""
    if pending:
        lines.append(pending)
    return lines


# --- what the instructions of one image say ----------------------------------------------


def env(instructions: list[Instruction]) -> dict[str, str]:
    """The ENV the image ends with."""
    out: dict[str, str] = {}
    for instr, args in instructions:
        if instr != "ENV":
            continue
        words = shlex.split(args)
        if words and "=" not in words[0]:  # legacy `ENV KEY value`
            out[words[0]] = " ".join(words[1:])
        else:
            out.update(w.split("=", 1) for w in words)
    return out


def entrypoints(instructions: list[Instruction]) -> list[list[str]]:
    """Each ENTRYPOINT in exec form (the last one counts)."""
    return [json.loads(args) for instr, args in instructions if instr == "ENTRYPOINT"]


def users(instructions: list[Instruction]) -> list[str]:
    """Each USER's user name or id (the last one counts)."""
    return [args.split(":")[0] for instr, args in instructions if instr == "USER"]


def exposed_ports(instructions: list[Instruction]) -> set[int]:
    return {
        int(port.split("/")[0])
        for instr, args in instructions
        if instr == "EXPOSE"
        for port in args.split()
    }


def copied_sources(instructions: list[Instruction]) -> set[str]:
    """The names of what COPY takes from the build context (not --from= stages)."""
    return {
        Path(source).name
        for instr, args in instructions
        if instr == "COPY" and "--from=" not in args
        for source in args.split()[:-1]
        if not source.startswith("--")
    }


@dataclass
class PipInstall:
    position: tuple[int, int]  # (instruction index, command index): install order
    env: dict[str, str]  # VAR=value words before the command
    args: list[str]  # after `pip install`, with the image's ENV expanded

    def requirement(self, project: str) -> str | None:
        pattern = re.compile(rf"^{re.escape(project)}(\[[^\]]*\])?([<>=!~].*)?$", re.IGNORECASE)
        return next((a for a in self.args if pattern.match(a)), None)

    def indexes(self) -> list[str]:
        """The package indexes it reads (--index-url, --extra-index-url, -i)."""
        out = [
            self.args[i + 1]
            for i, a in enumerate(self.args[:-1])
            if a in ("--index-url", "--extra-index-url", "-i")
        ]
        return out + [a.split("=", 1)[1] for a in self.args if a.startswith("--index-url=")]


def pip_installs(instructions: list[Instruction]) -> list[PipInstall]:
    """Every `pip install` of the shell-form RUNs, split at && ; | and friends."""
    out = []
    image_env: dict[str, str] = {}
    for i, (instr, args) in enumerate(instructions):
        if instr == "ENV":
            image_env.update(env([(instr, args)]))
        if instr != "RUN" or args.startswith("["):
            continue
        for j, words in enumerate(_commands(args)):
            prefix: dict[str, str] = {}
            while words and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[0]):
                key, value = words.pop(0).split("=", 1)
                prefix[key] = value
            words = [expand(w, {**image_env, **prefix}) for w in words]
            if words[:2] in (["pip", "install"], ["pip3", "install"]):
                out.append(PipInstall((i, j), prefix, words[2:]))
            elif words[:4] in (
                ["python", "-m", "pip", "install"],
                ["python3", "-m", "pip", "install"],
            ):
                out.append(PipInstall((i, j), prefix, words[4:]))
    return out


def _commands(script: str) -> list[list[str]]:
    lexer = shlex.shlex(script, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    commands: list[list[str]] = [[]]
    for token in lexer:
        if token in ("&&", "||", ";", "|", "&"):
            commands.append([])
        else:
            commands[-1].append(token)
    return commands
