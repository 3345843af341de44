"""The commands the documentation and the benchmark scripts print are commands byol takes: every
`byol …` line of README.md, BENCHMARKS.md, CLAIMS.md and benchmarks/*.sh parses with the real
parser (a flag renamed or removed fails here, not in a reader's terminal)."""
import re
import shlex
import time
from pathlib import Path

import pytest

from byol.commands.cli import build_parser

ROOT = Path(__file__).parent.parent
SOURCES = [ROOT / "README.md", ROOT / "BENCHMARKS.md", ROOT / "CLAIMS.md", *sorted((ROOT / "benchmarks").glob("*.sh"))]
INVOCATION = re.compile(r"(?:^|[\s;&|(`])(?:\S*/)?(?:byol|\$BYOL|\$\{BYOL\}|-m byol)\s+(?=[a-z])")
COMMANDS = ("pretrain", "eval", "finetune", "compare", "bench", "report", "export", "views", "embed")


def shell_lines(text: str, markdown: bool) -> list[str]:
    """Code lines with their continuations joined: fenced blocks and `inline spans` in Markdown,
    every line of a shell script."""
    if markdown:  # fenced shell blocks, and inline spans that give a command with its flags
        blocks = re.findall(r"```(?:bash|sh|console)\n(.*?)```", text, re.S)
        lines = [line for block in blocks for line in block.replace("\\\n", " ").splitlines()]
        lines += [span for span in re.findall(r"`([^`\n]*byol [^`\n]*)`", text) if " --" in span]
    else:
        lines = text.replace("\\\n", " ").splitlines()
    return [line.split(" #")[0] for line in lines if not line.lstrip().startswith("#")]


def byol_arguments(line: str) -> list[list[str]]:
    """The arguments of every byol invocation in a line, shell syntax ended at redirections and
    command separators, variables replaced by a placeholder."""
    found = []
    for match in INVOCATION.finditer(line):
        # "$@" (a script's extra flags) may be nothing; an array is a value after a flag, else nothing
        rest = re.sub(r'"?\$[@*]"?', "", line[match.end():])
        rest = re.sub(r'(\S*)(\s+)"?\$\{\w+\[@\]\}"?',
                      lambda m: m.group(1) + (m.group(2) + "X" if m.group(1).startswith("--") else ""), rest)
        rest = re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", rest)  # ${NAME:-default}: the default
        rest = re.sub(r"\$\{[^}]*\}|\$\(\([^)]*\)\)|\$\([^)]*\)|\$\w+", "X", rest)
        rest = re.split(r"\s(?:\d?>>?|\||&&|;|<<)|\)\s*$", rest)[0]
        try:
            words = shlex.split(rest)
        except ValueError:  # an unbalanced quote in prose
            words = rest.split()
        words = [w.rstrip(")`") for w in words if w not in ("...", "…")]  # "and more flags" in prose
        if words and words[0] in COMMANDS:
            found.append(words)
    return found


def invocations() -> list[tuple[str, list[str]]]:
    found = []
    for path in SOURCES:
        for line in shell_lines(path.read_text(), path.suffix == ".md"):
            found += [(f"{path.name}: {line.strip()[:100]}", args) for args in byol_arguments(line)]
    return found


CASES = invocations()


def test_the_documents_hold_byol_commands_to_check():
    commands = {args[0] for _, args in CASES}
    assert {"pretrain", "compare", "eval", "bench", "export", "views", "embed"} <= commands, commands
    assert len(CASES) >= 40


@pytest.mark.parametrize("where, args", CASES, ids=[where for where, _ in CASES])
def test_every_documented_byol_command_parses(where, args):
    parser = build_parser()
    try:
        parser.parse_args(args)
    except SystemExit as exit_:
        assert exit_.code == 0, f"{where}: byol {' '.join(args)}"  # --help exits 0


def test_the_gpu_suite_reads_a_printed_table_into_its_summary():
    import sys

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from gpu_suite import markdown, streaming_figures, table_figures, tests_figures

    printed = "H100; torch 2.11\n| size | byol | ratio | lightly | ratio |\n| --- | --- | --- | --- | --- |\n" \
              "| 32 | 900 | 3.1x | 290 | 3.2x |\n"
    figures = table_figures(printed, None)
    assert figures == {"rows": [{"size": "32", "byol": "900", "ratio 2": "3.1x", "lightly": "290", "ratio 4": "3.2x"}]}
    summary = markdown({"stages": [{"name": "libraries", "status": "ok", "seconds": 5, "figures": figures}]})
    assert "| libraries | ok | 5 | rows: size 32, byol 900, ratio 2 3.1x, lightly 290, ratio 4 3.2x |" in summary
    assert tests_figures("...\n3 passed, 1 skipped, 340 deselected in 7.2s\n", None) == {
        "passed": 3, "skipped": 1, "deselected": 340}
    assert streaming_figures("streaming: 1,234 images/s, waiting for data 0.2 % of the epoch (resnet50)", None) == {
        "images_per_s": "1,234", "data_wait_percent": 0.2}


@pytest.mark.slow
def test_the_gpu_suite_reads_what_the_step_profiler_prints():
    """The profiler stage's figures come from the script's real output (a tiny CPU run), so a
    changed line shows here and not as an empty cell after a GPU lease."""
    import subprocess
    import sys

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from gpu_suite import profile_figures

    printed = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "profile_step.py"), "--arch", "narrow_resnet",
                              "--image-size", "16", "--batch-size", "4", "--steps", "1"], capture_output=True,
                             text=True, check=True).stdout
    figures = profile_figures(printed, None)
    step, busy = float(figures["step_ms"]), float(figures["device_busy_ms"])
    assert step > 0 and busy > 0 and int(figures["operators_per_step"]) > 100
    # the busy share is the busy time over the wall (each printed rounded); on a CPU the profiled
    # steps run slower than the unprofiled wall, so the share can pass 100 %
    assert abs(int(figures["busy_percent"]) - 100 * busy / step) <= 1
    assert len(figures["rows"]) == 15 and all(row["operator"].startswith("aten::") for row in figures["rows"])
    times = [float(row["ms per step"]) for row in figures["rows"]]
    assert times == sorted(times, reverse=True)  # the most costly first


def test_the_gpu_suite_keeps_its_deadline_and_every_stage_result(tmp_path):
    """Tiny stages under a 3-second deadline: one that finishes, one that fails, one cut at its
    limit (its partial output kept, its figures read from it), one with no time left; after the
    first stage, and after every one, summary.json is valid."""
    import json
    import sys

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from gpu_suite import Stage, run_stages

    python = sys.executable
    seen = tmp_path / "seen.json"
    stages = [
        Stage("quick", [python, "-c", "print('| a | 1 |')"], 30, lambda text, out: {"printed": text.strip()}),
        Stage("broken", [python, "-c", f"import shutil; shutil.copy({str(tmp_path / 'summary.json')!r}, "
                                       f"{str(seen)!r}); raise SystemExit(3)"], 30),
        Stage("slow", [python, "-u", "-c", "import time; print('half', flush=True); time.sleep(60)"], 30,
              lambda text, out: {"partial": text.strip()}),
        Stage("late", [python, "-c", "print('never')"], 30),
    ]
    started = time.monotonic()
    summary = run_stages(stages, tmp_path, seconds=3.0, least=0.5)
    assert time.monotonic() - started < 30  # the slow stage was stopped at the deadline, not its own end
    statuses = [entry["status"] for entry in summary["stages"]]
    assert statuses[0] == "ok" and statuses[1] == "failed (exit 3)"
    assert statuses[2].startswith("stopped at its limit") and statuses[3] == "skipped: no time left"
    assert summary["stages"][0]["figures"] == {"printed": "| a | 1 |"}
    assert summary["stages"][2]["figures"] == {"partial": "half"}
    assert [e["name"] for e in json.loads(seen.read_text())["stages"]] == ["quick"]  # valid after the first stage
    assert json.loads((tmp_path / "summary.json").read_text()) == summary
    assert "| slow | stopped at its limit" in (tmp_path / "summary.md").read_text()
