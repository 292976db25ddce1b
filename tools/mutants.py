"""Mutation testing of the library and the stages within a time budget (``make mutants``).

mutmut (configured under ``[tool.mutmut]`` in pyproject.toml) makes one small plausible bug at a
time in every function of ``a2model/`` and ``pipeline/``: about 11,000 mutants, each checked by
the tests that ran its function. All of them would take a day on two cores, so this draws a
seeded uniform sample of the mutants, runs it within ``--budget`` seconds (mutmut checks the
cheapest first; what the budget leaves is reported as not checked), and prints the kill rate with
its 95 % interval and every surviving mutant (``mutmut show NAME`` prints its diff).

mutmut picks a mutant's tests by which test *called* its function, so a module fixture's calls
count for the first test that made it, and a later test of that file, which checks what the
fixture made, is never run on the mutant. Each survivor therefore gets a second check within the
budget: the whole test files of its tests, the mutant active (``killed by its files``).

The kill rate counts a mutant as killed when a test failed, timed out or crashed; mutants whose
function no test runs in the test process ("no tests": code reached only in a subprocess a test
starts) are reported apart, not counted. A run starts from a fresh ``mutants/`` folder, so a
verdict never comes from older code or tests; ``--again`` keeps it and checks once more only the
sampled mutants that survived or had no test (after tests were added: mutmut regenerates the
mutants of changed source files and finds the new tests itself), and ``--rest`` checks those an
earlier run's budget left unchecked, so that budgeted runs add up to the whole sample.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

WORK = Path("mutants")
FILE_KILLS = WORK / "killed_by_files.json"
KILLED = {"killed", "timeout", "segfault", "killed by its files"}
NOT_COUNTED = {"no tests", "not checked", "skipped", "check was interrupted by user"}
SECOND_CHECK_SHARE = 0.2  # of the budget, kept for the survivors' second check
RECHECKED = {"survived", "suspicious", "no tests"}  # by --again: what new tests may now kill
LEFT = {"not checked", "check was interrupted by user"}  # by --rest: what an earlier budget left


def generate_mutants(workers: int) -> list[str]:
    """Write ``mutants/`` (mutmut's own first step of ``mutmut run``) and list every mutant's name."""
    from mutmut.__main__ import copy_also_copy_files, copy_src_dir, create_mutants, setup_source_paths

    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir()
    copy_src_dir()
    copy_also_copy_files()
    setup_source_paths()
    create_mutants(workers)
    return sorted(verdicts())


def verdicts() -> dict[str, str]:
    """Each generated mutant's status as mutmut names it (``killed``, ``survived``, ``no tests``, …),
    or ``killed by its files`` where the second check killed a survivor."""
    from mutmut.stats import status_by_exit_code

    found: dict[str, str] = {}
    for meta in WORK.rglob("*.py.meta"):
        for name, exit_code in json.loads(meta.read_text())["exit_code_by_key"].items():
            found[name] = status_by_exit_code[exit_code]
    for name in json.loads(FILE_KILLS.read_text()) if FILE_KILLS.is_file() else []:
        if found.get(name) == "survived":
            found[name] = "killed by its files"
    return found


def test_files_of(name: str, stats: dict) -> list[str]:
    """The test files of the tests mutmut ran on mutant ``name`` (its function's callers)."""
    tests = stats["tests_by_mangled_function_name"].get(name.partition("__mutmut_")[0], [])
    return sorted({test.split("::")[0] for test in tests})


def files_seconds(files: list[str], stats: dict) -> float:
    """How long the tests of ``files`` took in mutmut's stats pass."""
    return sum(t for test, t in stats["duration_by_test"].items() if test.split("::")[0] in files)


def check_with_files(survivors: list[str], deadline: float) -> None:
    """Run each survivor against the whole test files of its tests (the mutant active), those
    with the quickest files first; record those a test fails on in FILE_KILLS. Stops at
    ``deadline`` (time.monotonic())."""
    from mutmut.configuration import config

    selection = [arg for arg in config().pytest_add_cli_args_test_selection if arg != "tests"]
    killed = set(json.loads(FILE_KILLS.read_text())) if FILE_KILLS.is_file() else set()
    stats = json.loads((WORK / "mutmut-stats.json").read_text())
    files_of = {name: test_files_of(name, stats) for name in survivors}
    survivors = sorted(survivors, key=lambda name: files_seconds(files_of[name], stats))
    for name in survivors:
        left = deadline - time.monotonic()
        if left < 30:
            print(f"budget spent: {survivors.index(name)} of {len(survivors)} survivors checked again")
            break
        files = files_of[name]
        if not files:  # without file arguments pytest would run the whole suite
            continue
        command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:randomly", "-p", "no:cacheprovider"]
        env = {**os.environ, "MUTANT_UNDER_TEST": name}
        try:
            done = subprocess.run([*command, *selection, *files], cwd=WORK, env=env, capture_output=True, timeout=left)
        except subprocess.TimeoutExpired:
            break
        if done.returncode not in (0, 5):  # 5: the files' tests were all deselected
            killed.add(name)
        FILE_KILLS.write_text(json.dumps(sorted(killed)))


def sample(names: list[str], fraction: float, seed: int) -> list[str]:
    """The mutants whose seeded hash falls below ``fraction``: uniform, stable as code is added."""

    def unit(name: str) -> float:
        return int(hashlib.sha256(f"{seed}:{name}".encode()).hexdigest()[:12], 16) / 16**12

    return [name for name in names if unit(name) < fraction]


# ``mutmut run`` without its clean run of the tests: after a full stats pass in the same run, which
# stops mutmut when any test fails, it would only run the whole suite once more (~10 min here).
WITHOUT_CLEAN_RUN = (
    "import sys; from mutmut.__main__ import cli; from mutmut.workers.isolation import ForkServerRunner; "
    "ForkServerRunner.run_clean_tests = lambda self, tests: 0; sys.argv[0] = 'mutmut'; cli()"
)


def run_mutmut(names: list[str], budget_s: float, workers: int, clean_run: bool) -> bool:
    """``mutmut run`` on ``names`` (``clean_run``: with its clean run of their tests first),
    interrupted (as Ctrl-C would) when the budget is spent; whether it ran to its end or to the
    budget (False: it failed before checking, e.g. a test failed)."""
    launch = ["-m", "mutmut"] if clean_run else ["-c", WITHOUT_CLEAN_RUN]
    command = [sys.executable, *launch, "run", "--max-children", str(workers), *names]
    with subprocess.Popen(command, start_new_session=True) as mutmut:
        try:
            return mutmut.wait(timeout=max(budget_s, 1)) == 0
        except subprocess.TimeoutExpired:
            print(f"\nbudget of {budget_s:.0f} s spent: stopping mutmut", flush=True)
            os.killpg(mutmut.pid, signal.SIGINT)
            try:
                mutmut.wait(timeout=120)
            except subprocess.TimeoutExpired:
                os.killpg(mutmut.pid, signal.SIGKILL)
            return True


def wilson_interval(killed: int, total: int, z: float = 1.96) -> tuple[float, float]:
    """95 % interval of a proportion measured on a sample (Wilson score)."""
    if total == 0:
        return 0.0, 1.0
    p = killed / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return centre - half, centre + half


def report(statuses: dict[str, str], population: int) -> str:
    """Counts per status, the kill rate over the checked mutants and the survivors by module."""
    counts = Counter(statuses.values())
    killed = sum(counts[s] for s in KILLED)
    checked = sum(n for s, n in counts.items() if s not in NOT_COUNTED)
    low, high = wilson_interval(killed, checked)
    lines = [
        f"sample: {len(statuses)} of {population} mutants; "
        + ", ".join(f"{status} {n}" for status, n in counts.most_common()),
        f"kill rate: {killed}/{checked} = {killed / max(checked, 1):.1%} (95 % interval {low:.1%}–{high:.1%})",
    ]
    survivors = sorted(name for name, status in statuses.items() if status not in KILLED | NOT_COUNTED)
    if survivors:
        lines.append(f"not killed ({len(survivors)}; `.venv/bin/mutmut show NAME` prints the change):")
        lines += [f"  {name}  [{statuses[name]}]" for name in survivors]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=3300, help="seconds for the whole run (default 3300)")
    parser.add_argument("--fraction", type=float, default=0.1, help="share of the mutants to check (default 0.1)")
    parser.add_argument("--seed", type=int, default=0, help="which sample (default 0)")
    parser.add_argument("--again", action="store_true", help="recheck the sample's survivors and untested mutants")
    parser.add_argument("--rest", action="store_true", help="check the sample's mutants an earlier budget left")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2, help="mutants checked at once")
    args = parser.parse_args(argv)
    if not 0 < args.fraction <= 1:
        parser.error(f"--fraction={args.fraction} is not valid: give a share in (0, 1]")

    start = time.monotonic()
    resume = args.again or args.rest
    names = sorted(verdicts()) if resume else generate_mutants(args.workers)
    if not names:
        print("error: mutants/ holds no earlier run; run make mutants without --again/--rest first", file=sys.stderr)
        return 2
    chosen = sample(names, args.fraction, args.seed)
    last = verdicts()
    wanted = (RECHECKED if args.again else set()) | (LEFT if args.rest else set())
    to_check = [name for name in chosen if last[name] in wanted] if resume else chosen
    print(
        f"{len(names)} mutants; sample of {len(chosen)} (fraction {args.fraction}, seed {args.seed}); "
        f"checking {len(to_check)}",
        flush=True,
    )
    deadline = start + args.budget
    mutmut_share = args.budget * (1 - SECOND_CHECK_SHARE)
    budget_s = start + mutmut_share - time.monotonic()
    if to_check and not run_mutmut(to_check, budget_s, args.workers, clean_run=resume):
        print("error: mutmut stopped before checking; set debug = true under [tool.mutmut] to see why", file=sys.stderr)
        return 2
    statuses = verdicts()
    check_with_files([name for name in to_check if statuses[name] == "survived"], deadline)
    statuses = verdicts()
    text = report({name: statuses[name] for name in chosen}, len(names))
    (WORK / "report.txt").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
