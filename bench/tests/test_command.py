"""`conveyor bench`: the conveyor CLI finds the benchmark through the
`conveyor.commands` entry points when conveyor-bench is installed, and says
in one line how to install it when it is not.

"Not installed" is a real environment, not a patched function: a virtual
environment whose site-packages holds everything this one holds but the
files of the conveyor-bench distribution (its dist-info and the .pth of its
editable install).
"""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from conveyor.cli import COMMANDS_GROUP, cli

import conveyor_bench

pytestmark = pytest.mark.timeout(120)

HINT = "pip install ./bench"


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)  # only what is installed counts
    return env


@pytest.fixture(scope="module")
def site_without_bench(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(python, site-packages) of a new virtual environment holding this one's
    packages but conveyor-bench."""
    bench_dist = importlib.metadata.distribution("conveyor-bench")
    site_packages = Path(str(bench_dist.locate_file(""))).resolve()
    bench_files = {Path(str(f)).parts[0] for f in bench_dist.files or ()}
    assert any(name.endswith(".dist-info") for name in bench_files), bench_files

    venv = tmp_path_factory.mktemp("without-bench") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    target = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    for entry in site_packages.iterdir():
        if entry.name not in bench_files:
            (target / entry.name).symlink_to(entry)
    return python, target


def test_installed_bench_is_a_conveyor_command_in_process() -> None:
    runner = CliRunner()
    listing = runner.invoke(cli, ["--help"], prog_name="conveyor")
    assert listing.exit_code == 0, listing.output
    assert "  bench " in listing.output

    result = runner.invoke(cli, ["bench", "--help"], prog_name="conveyor")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("Usage: conveyor bench [OPTIONS]")
    assert "--scenario NAME" in result.output

    entry_points = importlib.metadata.entry_points(group=COMMANDS_GROUP, name="bench")
    assert [ep.load() for ep in entry_points] == [conveyor_bench.bench]


def test_installed_bench_runs_as_conveyor_bench_and_as_its_own_script(admin_url: str) -> None:
    env = _env()
    env["DATABASE_URL"] = admin_url
    args = ["--scenario", "enqueue_bulk", "--jobs", "200", "--repeat", "1", "--compare", "none"]
    scripts = Path(sys.executable).parent
    for argv in (
        [sys.executable, "-m", "conveyor", "bench", *args],
        [str(scripts / "conveyor"), "bench", *args],
        [str(scripts / "conveyor-bench"), *args],
    ):
        done = subprocess.run(
            argv, check=False, env=env, capture_output=True, text=True, timeout=90
        )
        assert done.returncode == 0, (argv, done.stderr)
        assert "2. bulk enqueue, batches of 1,000 (N = 200)" in done.stdout, done.stdout


def test_without_bench_conveyor_bench_says_how_to_install_it_in_process(
    site_without_bench: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, target = site_without_bench
    site_packages = Path(
        str(importlib.metadata.distribution("conveyor-bench").locate_file(""))
    ).resolve()
    # Distributions are found on sys.path at each lookup: swap this
    # environment's site-packages for the one without conveyor-bench.
    paths = [str(target) if Path(p).resolve() == site_packages else p for p in sys.path]
    assert str(target) in paths
    monkeypatch.setattr(sys, "path", paths)
    assert not list(importlib.metadata.entry_points(group=COMMANDS_GROUP, name="bench"))

    runner = CliRunner()
    listing = runner.invoke(cli, ["--help"], prog_name="conveyor")
    assert listing.exit_code == 0, listing.output
    assert "  bench " not in listing.output
    assert "  worker " in listing.output

    result = runner.invoke(cli, ["bench", "--scenario", "drain"], prog_name="conveyor")
    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    assert result.stderr == (
        f"conveyor: error: 'conveyor bench' is not installed: {HINT} (from a conveyor checkout)\n"
    )


def test_without_bench_conveyor_bench_says_how_to_install_it(
    site_without_bench: tuple[Path, Path],
) -> None:
    python, _ = site_without_bench
    probe = subprocess.run(
        [
            str(python),
            "-c",
            "import conveyor, importlib.util as u; print(u.find_spec('conveyor_bench') is None)",
        ],
        env=_env(),
        capture_output=True,
        text=True,
        check=True,
    )
    assert probe.stdout.strip() == "True", probe
    done = subprocess.run(
        [str(python), "-m", "conveyor", "bench"],
        check=False,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1, done
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert HINT in lines[0] and "conveyor bench" in lines[0], lines
