"""`python -m bookgen ...` and `python -c CODE` for tests, started from a fork server that has
imported torch once, instead of from a new interpreter each time.

A new interpreter spends most of a short training process importing: torch, then torch._dynamo,
which torch.optim imports when the first optimizer is built (its `add_param_group` is wrapped in
`torch._disable_dynamo`). On the 2-core AMD EPYC VM: 7 s at a load of 2 (torch 4 s), 15 s at a
load of 6; a test's short training then takes a second. Here multiprocessing's fork server
imports them once per test process (xdist worker), and each command is a fork of it, started
with the interpreter's own SIGINT handler, the caller's environment and working folder, its
output in files: the process a test signals or kills is still a process of its own, running
the command's code from its start (bookgen is not imported in the server). torch is fork-safe
there: the server has only imported it, never run an operation, so it has started no thread
(a fork has one).

`python(argv, logs)` stands for `subprocess.Popen([sys.executable, *argv])` with both outputs
captured; `run(argv, logs)` for `subprocess.run(..., capture_output=True, text=True)`.
"""

from __future__ import annotations

import multiprocessing
import os
import runpy
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

PRELOAD = ["torch", "torch._dynamo"]


def _server() -> multiprocessing.context.BaseContext:
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)  # read when the server starts, at the first command
    return context


def _main(argv: list[str], env: dict[str, str], cwd: str, out: str, err: str) -> None:
    """In the fork: what `python *argv` would do, as a new interpreter would start it."""
    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)
    for fd, path in ((1, out), (2, err)):
        file = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(file, fd)
        os.close(file)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    option, target, *args = argv
    if option == "-m":
        sys.argv = [target, *args]  # runpy puts the module's path first, as python -m does
        runpy.run_module(target, run_name="__main__", alter_sys=True)
    elif option == "-c":
        sys.argv = ["-c", *args]
        exec(compile(target, "<string>", "exec"), {"__name__": "__main__"})
    else:
        raise ValueError(f"python {option}: only -m MODULE and -c CODE are forked")


class Forked:
    """The subprocess.Popen methods the tests use, for one forked command."""

    def __init__(self, argv: list[str], logs: Path, env: dict | None, cwd: Path | None) -> None:
        fd, self._out = tempfile.mkstemp(".stdout", dir=logs)
        os.close(fd)
        fd, self._err = tempfile.mkstemp(".stderr", dir=logs)
        os.close(fd)
        environment = dict(os.environ if env is None else env)
        folder = str(cwd or os.getcwd())
        self._process = _server().Process(
            target=_main, args=(argv, environment, folder, self._out, self._err), daemon=True
        )
        self._process.start()
        self.pid = self._process.pid
        self.args = argv

    @property
    def returncode(self) -> int | None:
        return self._process.exitcode  # -N when killed by signal N, as Popen's

    def poll(self) -> int | None:
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        self._process.join(timeout)
        if self.returncode is None:
            raise subprocess.TimeoutExpired(self.args, timeout)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:  # never a pid that may since have been reused
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def communicate(self, timeout: float | None = None) -> tuple[str, str]:
        """(stdout, stderr) once the command has ended."""
        self.wait(timeout)
        return self.output()

    def output(self) -> tuple[str, str]:
        """(stdout, stderr) so far."""
        read = lambda path: Path(path).read_text(encoding="utf-8", errors="replace")  # noqa: E731
        return read(self._out), read(self._err)


def python(
    argv: list[str], logs: Path, *, env: dict | None = None, cwd: Path | None = None
) -> Forked:
    """`python *argv` started (argv: ["-m", MODULE, ...] or ["-c", CODE, ...]); its outputs go to
    files in the folder `logs`."""
    return Forked(argv, logs, env, cwd)


def run(
    argv: list[str],
    logs: Path,
    *,
    timeout: float | None = None,
    env: dict | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess:
    """`python *argv` run to its end, as subprocess.run(capture_output=True, text=True)."""
    process = python(argv, logs, env=env, cwd=cwd)
    try:
        stdout, stderr = process.communicate(timeout)
    finally:
        process.kill()
    return subprocess.CompletedProcess(argv, process.returncode, stdout, stderr)
