"""The ``geoseg`` command of another Python environment: find it, check its version, run it with its progress
streamed line by line, and stop it the way Ctrl-C does (SIGINT: geoseg exits 130 and keeps finished tiles).

Plain Python, no QGIS and no geoseg imports: QGIS's own Python stays untouched, and this module is tested outside
QGIS too.
"""

from __future__ import annotations

import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

MIN_VERSION = (0, 1, 0)
"""The oldest geoseg this plugin drives (``run --progress lines``, ``submit``, ``status``)."""
ENV_VARIABLE = "GEOSEG_EXECUTABLE"
"""Environment variable naming the geoseg executable, read when the Processing setting is empty."""
_MIN_TEXT = ".".join(map(str, MIN_VERSION))
INSTALL_HINT = (
    f'python3 -m venv ~/geoseg-env && ~/geoseg-env/bin/pip install "geoseg>={_MIN_TEXT}", then set '
    "Settings > Options > Processing > Providers > geoseg > geoseg executable to ~/geoseg-env/bin/geoseg"
)
_PROGRESS = re.compile(r"^geoseg-progress stage=(\S+) done=(\d+) failed=(\d+) total=(\d+)\s*$")
_WROTE_GPKG = re.compile(r"^wrote (.+?) \(((?:[^():]+: \d+(?:, )?)*)\) in [\d.]+ s on .+$")
_STATUS = re.compile(r"^(\S+)  ([A-Z]+)(?:  (\S+) (\d+)/(\d+)(?:, (\d+) failed)?)?(?:  (.*))?$")
_OPTIONS = {"pass --overwrite": "check 'Overwrite existing outputs'", "with --resume": "with 'Resume' checked"}
"""geoseg's advice in command line terms -> the same advice in the algorithms' terms."""
_VERSION = re.compile(r"geoseg (\d+)\.(\d+)\.(\d+)")


class GeosegMissing(Exception):
    """No usable geoseg executable: the message says where it looked and how to install one."""


@dataclass(frozen=True)
class Progress:
    """One progress line of ``geoseg run --progress lines``: tiles ``done`` (``failed`` of them) of ``total``."""

    stage: str
    done: int
    failed: int
    total: int

    @property
    def percent(self) -> float:
        return 100.0 * self.done / self.total if self.total else 100.0


@dataclass
class Outcome:
    """How a geoseg command ended: its exit code, its output lines, and whether it was stopped on request."""

    returncode: int
    stdout: list[str] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)
    canceled: bool = False

    def error(self) -> str:
        """geoseg's one-line error (``geoseg: error: ...``), else the last line it wrote to stderr; its command line
        flags named as the algorithm's options (``--overwrite``: *Overwrite existing outputs*)."""
        found = [line for line in self.stderr if line.startswith("geoseg: ")] or self.stderr[-1:]
        line = found[-1] if found else f"geoseg exited with code {self.returncode}"
        for flag, option in _OPTIONS.items():
            line = line.replace(flag, option)
        return line


@dataclass(frozen=True)
class Written:
    """What ``geoseg run`` wrote: the GeoPackage with its layers' feature counts, and the other files."""

    geopackage: str
    layers: dict[str, int]
    files: list[str]


def parse_progress(line: str) -> Progress | None:
    """The progress in one line of geoseg's output, or None for any other line."""
    match = _PROGRESS.match(line)
    if match is None:
        return None
    stage, done, failed, total = match.groups()
    return Progress(stage, int(done), int(failed), int(total))


def parse_written(lines: Sequence[str]) -> Written | None:
    """The outputs that ``geoseg run`` reports on stdout (``wrote X.gpkg (fields: 12, ...) in ...``)."""
    found: Written | None = None
    for line in lines:
        match = _WROTE_GPKG.match(line)
        if match:
            pairs = [part.rsplit(": ", 1) for part in match.group(2).split(", ") if part]
            found = Written(match.group(1), {name: int(n) for name, n in pairs}, [])
        elif found is not None and line.startswith("wrote "):
            found.files.append(line[len("wrote ") :])
    return found


def parse_status(lines: Sequence[str]) -> dict[str, str | int] | None:
    """``geoseg status``'s line (``raysubmit_X  RUNNING  tiles 4/9, 1 failed``) as *Cluster job status* outputs."""
    for line in reversed(lines):
        match = _STATUS.match(line.strip())
        if match:
            _, state, _, done, total, failed, _ = match.groups()
            return {
                "STATE": state,
                "TILES_DONE": int(done or 0),
                "TILES_TOTAL": int(total or 0),
                "TILES_FAILED": int(failed or 0),
                "SUMMARY": line.strip(),
            }
    return None


def candidates(home: Path | None = None) -> list[Path]:
    """Common places of a geoseg executable besides PATH: virtual environments and conda environments."""
    home = home or Path.home()
    exe = "Scripts/geoseg.exe" if sys.platform == "win32" else "bin/geoseg"
    envs = [".venv", "venv", "geoseg-env", ".virtualenvs/geoseg", "geoseg/.venv", ".local"]
    envs += [f"{conda}/envs/geoseg" for conda in ("miniconda3", "anaconda3", "miniforge3", "mambaforge")]
    return [home / env / exe for env in envs] + [Path("/opt/geoseg") / exe]


def find_geoseg(setting: str | None = None, home: Path | None = None) -> str:
    """The geoseg executable: the Processing setting, else ``$GEOSEG_EXECUTABLE``, else PATH, else common places.

    Raises:
        GeosegMissing: a path was given that is not an executable, or none was found.
    """
    given = (setting or "").strip() or os.environ.get(ENV_VARIABLE, "").strip()
    if given:
        if os.path.isfile(given) and os.access(given, os.X_OK):
            return given
        raise GeosegMissing(f"geoseg executable {given!r} does not exist or cannot be run; install it: {INSTALL_HINT}")
    found = shutil.which("geoseg")
    if found:
        return found
    for path in candidates(home):
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    raise GeosegMissing(f"geoseg was not found (not on PATH, nor in ~/.venv, ~/venv, ~/geoseg-env); {INSTALL_HINT}")


def clean_env() -> dict[str, str]:
    """The environment for geoseg: QGIS's own Python settings (PYTHONPATH, PYTHONHOME) left out, output unbuffered."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def check_version(executable: str) -> str:
    """``geoseg --version`` of the executable, e.g. ``0.1.0``.

    Raises:
        GeosegMissing: it does not run, is not geoseg, or is older than :data:`MIN_VERSION`.
    """
    try:
        proc = subprocess.run(
            [executable, "--version"], capture_output=True, text=True, timeout=120, env=clean_env(), check=False
        )
    except (OSError, subprocess.SubprocessError) as err:
        raise GeosegMissing(f"{executable} does not run ({err}); install geoseg: {INSTALL_HINT}") from None
    match = _VERSION.search(proc.stdout + proc.stderr)
    if proc.returncode != 0 or match is None:
        said = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise GeosegMissing(f"{executable} --version did not report geoseg ({said[0][:200]}); {INSTALL_HINT}")
    version = tuple(int(part) for part in match.groups())
    if version < MIN_VERSION:
        raise GeosegMissing(
            f"{executable} is geoseg {'.'.join(match.groups())}, older than {_MIN_TEXT}, which this plugin needs; "
            f'upgrade it: {Path(executable).parent / "pip"} install --upgrade "geoseg>={_MIN_TEXT}"'
        )
    return ".".join(match.groups())


def _pump(stream: object, name: str, lines: queue.Queue[tuple[str, str | None]]) -> None:
    for line in stream:  # type: ignore[attr-defined]
        lines.put((name, line.rstrip("\r\n")))
    lines.put((name, None))


def _interrupt(proc: subprocess.Popen[str]) -> None:
    """Ctrl-C for the child: SIGINT on POSIX; on Windows a Ctrl-Break to its own process group."""
    if sys.platform == "win32":
        proc.send_signal(signal.CTRL_BREAK_EVENT)  # type: ignore[attr-defined]
    else:
        proc.send_signal(signal.SIGINT)


def run(
    executable: str,
    args: Sequence[str],
    on_line: Callable[[str, str], None],
    canceled: Callable[[], bool],
    grace_s: float = 120.0,
    cwd: str | None = None,
) -> Outcome:
    """Run ``executable args``, calling ``on_line(stream, line)`` for every line of stdout and stderr as it comes.

    When ``canceled()`` turns true the command gets SIGINT (geoseg shuts Ray down, keeps finished tiles and exits
    130); if it is still running ``grace_s`` later it gets SIGTERM, and SIGKILL after as long again.

    Returns:
        The :class:`Outcome`; ``canceled`` tells whether it was stopped on request.
    """
    flags = getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0)
    proc = subprocess.Popen(
        [executable, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        encoding="utf-8",
        errors="replace",
        env=clean_env(),
        cwd=cwd,
        creationflags=flags,
        start_new_session=sys.platform != "win32",  # QGIS's own Ctrl-C or session end does not reach it
    )
    lines: queue.Queue[tuple[str, str | None]] = queue.Queue()
    pumps = [
        threading.Thread(target=_pump, args=(stream, name, lines), daemon=True)
        for name, stream in (("stdout", proc.stdout), ("stderr", proc.stderr))
    ]
    for pump in pumps:
        pump.start()
    outcome, open_streams, stop_at, exited_at = Outcome(returncode=0), 2, 0.0, 0.0
    while open_streams:
        try:
            name, line = lines.get(timeout=0.2)
        except queue.Empty:
            name, line = "", None
            if proc.poll() is not None:  # a grandchild (e.g. a Ray worker) may hold the pipes open a while
                exited_at = exited_at or time.monotonic()
                if time.monotonic() - exited_at > 10:
                    break
        if name and line is None:
            open_streams -= 1
        elif line is not None:
            (outcome.stdout if name == "stdout" else outcome.stderr).append(line)
            on_line(name, line)
        if not outcome.canceled and canceled():
            outcome.canceled, stop_at = True, time.monotonic()
            _interrupt(proc)
        elif outcome.canceled and proc.poll() is None:
            _escalate(proc, time.monotonic() - stop_at, grace_s)
    outcome.returncode = proc.wait()
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()
    return outcome


def _escalate(proc: subprocess.Popen[str], waited: float, grace_s: float) -> None:
    if waited > 2 * grace_s:
        proc.kill()
    elif waited > grace_s:
        proc.terminate()
