"""`make mutate`: mutation testing of the modules in targets.toml, with cosmic-ray.

For each module: a cosmic-ray session (build/mutation/<module>.sqlite) of the operators
targets.toml names, each mutant applied to the file in place and the module's tests
run against it; then the kill rate, and every surviving mutant that equivalent.toml
does not explain. Exits 1 when one is left unexplained, so a new gap is a failure.

    python tests/mutation/run.py                    # every module
    python tests/mutation/run.py shared/images.py   # one (or several)

Not part of `make test`: a module takes minutes (one test run per mutant).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
OUT = ROOT / "build" / "mutation"
BIN = Path(sys.executable).parent
AUTOLOAD_OFF = "PYTEST_DISABLE_PLUGIN_AUTOLOAD=1"


@dataclass
class Mutant:
    operator: str
    line: int
    source: str  # the line it changes, as it reads unmutated
    outcome: str  # killed, survived, incompetent (the mutant does not run)
    mutated: str = ""  # that line as the mutant reads it (survivors only)


def _test_command(module: dict[str, object]) -> list[str]:
    """The module's tests, without the plugins the rest of the suite needs (schemathesis,
    hypothesis, playwright: with PYTEST_DISABLE_PLUGIN_AUTOLOAD=1), a quarter of the
    time per mutant."""
    tests = [str(t) for t in module["tests"]]  # type: ignore[attr-defined]
    plugins = ["-p", "no:cacheprovider", "-p", "pytest_timeout"]
    return [f"{BIN}/python", "-m", "pytest", "-x", "-q", *plugins, *tests]


def _config(module: dict[str, object], operators: dict[str, list[str]]) -> str:
    keep_binary = "|".join(operators["binary"])
    keep_comparison = "|".join(operators["comparison"])
    excluded = [
        f"core/ReplaceBinaryOperator_(?!({keep_binary})$)",
        f"core/ReplaceComparisonOperator_(?!({keep_comparison})$)",
        "core/ReplaceUnaryOperator_",
        "core/RemoveDecorator",
        "core/VariableReplacer",
        "core/VariableInserter",
    ]
    return (
        "[cosmic-ray]\n"
        f"module-path = {json.dumps(module['path'])}\n"
        "timeout = 120.0\n"
        "excluded-modules = []\n"
        f"test-command = {json.dumps(' '.join(['env', AUTOLOAD_OFF, *_test_command(module)]))}\n"
        '[cosmic-ray.distributor]\nname = "local"\n'
        "[cosmic-ray.filters.operators-filter]\n"
        f"exclude-operators = {json.dumps(excluded)}\n"
    )


def _run(*args: str) -> str:
    done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, check=True)
    return done.stdout


def mutate(module: dict[str, object], operators: dict[str, list[str]]) -> list[Mutant]:
    path = str(module["path"])
    stem = path.replace("/", "_").removesuffix(".py")
    config, session = OUT / f"{stem}.toml", OUT / f"{stem}.sqlite"
    config.write_text(_config(module, operators))
    session.unlink(missing_ok=True)
    _run(f"{BIN}/cosmic-ray", "init", str(config), str(session))
    _run(f"{BIN}/cr-filter-operators", str(session), str(config))
    _run(f"{BIN}/cosmic-ray", "exec", str(config), str(session))
    if subprocess.run(["git", "diff", "--quiet", "--", path], cwd=ROOT).returncode != 0:
        raise SystemExit(f"{path} was left changed by the run; restore it with git")
    lines = (ROOT / path).read_text().splitlines()
    mutants = []
    for raw in _run(f"{BIN}/cosmic-ray", "dump", str(session)).splitlines():
        item, result = json.loads(raw)
        if result is None or result["worker_outcome"] == "skipped":
            continue
        [mutation] = item["mutations"]
        line = mutation["start_pos"][0]
        occurrence = (mutation["operator_name"], str(mutation["occurrence"]))
        outcome = {
            "normal": result["test_outcome"],  # killed, survived or incompetent
            "abnormal": "killed",  # the tests crashed or ran past the timeout
        }.get(result["worker_outcome"], "incompetent")  # the mutation could not be run
        mutant = Mutant(
            mutation["operator_name"].removeprefix("core/"), line, lines[line - 1].strip(), outcome
        )
        if outcome == "survived":
            mutant.mutated = _mutated_line(path, line, *occurrence)
        mutants.append(mutant)
    return mutants


def known(mutant: dict[str, str], module: dict[str, object]) -> bool:
    """Apply one hand-written mutant, run the module's tests; True when they fail."""
    path = ROOT / mutant["path"]
    original = path.read_text()
    if original.count(mutant["old"]) != 1:
        raise SystemExit(f"{mutant['path']}: {mutant['old']!r} is not there exactly once")
    try:
        path.write_text(original.replace(mutant["old"], mutant["new"]))
        env = {**os.environ, AUTOLOAD_OFF.split("=")[0]: "1"}
        done = subprocess.run(
            _test_command(module), cwd=ROOT, env=env, capture_output=True, timeout=600
        )
    finally:
        path.write_text(original)
    return done.returncode != 0


def _mutated_line(path: str, line: int, operator: str, occurrence: str) -> str:
    """The line a mutant changes, as it reads mutated (applied, read, put back)."""
    file = ROOT / path
    original = file.read_text()
    try:
        _run(f"{BIN}/cosmic-ray", "apply", path, operator, occurrence)
        return file.read_text().splitlines()[line - 1].strip()
    finally:
        file.write_text(original)


def main(argv: list[str]) -> int:
    targets = tomllib.loads((HERE / "targets.toml").read_text())
    equivalent = tomllib.loads((HERE / "equivalent.toml").read_text()).get("mutant", [])
    modules = [m for m in targets["module"] if not argv or m["path"] in argv]
    OUT.mkdir(parents=True, exist_ok=True)
    report, unexplained = {}, 0
    for module in modules:
        started = time.monotonic()
        mutants = mutate(module, targets["operators"])
        seconds = time.monotonic() - started
        tried = [m for m in mutants if m.outcome != "incompetent"]
        killed = [m for m in tried if m.outcome == "killed"]
        # An entry names one mutant (`mutant`: the line as mutated) or every mutant
        # of a line (`source`: the line as written) where no change to it shows.
        explained = {(e["module"], e.get("mutant") or e["source"]): e["why"] for e in equivalent}
        survivors = [m for m in tried if m.outcome == "survived"]
        path = module["path"]
        print(f"{path}: {len(killed)}/{len(tried)} killed ({seconds:.0f} s)", flush=True)
        for m in survivors:
            why = explained.get((path, m.mutated)) or explained.get((path, m.source))
            unexplained += why is None
            print(
                f"  {'equivalent' if why else 'SURVIVED'} {m.operator} line {m.line}: {m.mutated}"
            )
            if why:
                print(f"    ({why})")
        report[path] = {
            "killed": len(killed),
            "tried": len(tried),
            "seconds": round(seconds),
            "survivors": [m.__dict__ for m in survivors],
        }
    by_path = {m["path"]: m for m in targets["module"]}
    for mutant in targets.get("known", []):
        if argv and mutant["path"] not in argv:
            continue
        killed = known(mutant, by_path[mutant["path"]])
        unexplained += not killed
        verdict = "killed" if killed else "SURVIVED"
        print(f"known mutant {verdict}: {mutant['path']}: {mutant['why']}", flush=True)
        report.setdefault("known", {})[f"{mutant['path']}: {mutant['why']}"] = verdict
    (OUT / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"report: {OUT / 'report.json'}; unexplained survivors: {unexplained}")
    return 1 if unexplained else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
