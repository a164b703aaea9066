"""Run an untrusted Python program against tests, without letting it harm the host.

Layers, each for a failure we have seen programs produce:
- a fresh temporary directory as its only writable place, owned by an unprivileged user
  (`nobody`) when we are root, so writes elsewhere fail;
- no network: a new network namespace (`unshare --net`) with no interfaces up;
- a new PID namespace with the program as its init, so when it ends, or when we kill the
  process group at the time limit, every process it forked dies with it (fork bombs);
- resource limits: address space (memory hogs), CPU seconds, file size, open files and
  processes (RLIMIT_NPROC bounds a fork bomb before the timeout does).
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

NOBODY = 65534


@dataclass(frozen=True)
class Limits:
    timeout_s: float = 10.0
    memory_mb: int = 1024
    max_processes: int = 32
    max_file_mb: int = 16
    max_output_chars: int = 4000


@dataclass(frozen=True)
class RunResult:
    status: str  # passed, failed, timeout, error (could not be run)
    returncode: int | None
    stdout: str
    stderr: str
    seconds: float

    @property
    def passed(self) -> bool:
        return self.status == "passed"


def isolation_prefix() -> list[str]:
    """The command that puts the program in its own network and PID namespaces as an
    unprivileged user. Raises RuntimeError where this machine cannot isolate."""
    unshare = shutil.which("unshare")
    if unshare is None:
        raise RuntimeError("the code sandbox needs `unshare` (util-linux)")
    ns = [unshare, "--net", "--pid", "--fork", "--kill-child"]
    if os.geteuid() != 0:
        return [*ns, "--map-root-user"]
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        raise RuntimeError("the code sandbox needs `setpriv` (util-linux) when run as root")
    drop = [setpriv, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
            "--inh-caps=-all", "--bounding-set=-all", "--"]  # fmt: skip
    return ns + drop


def _limit(limits: Limits):
    def apply() -> None:
        mem = limits.memory_mb << 20
        cpu = int(limits.timeout_s) + 1
        resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
        resource.setrlimit(resource.RLIMIT_FSIZE, (limits.max_file_mb << 20,) * 2)
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))
        resource.setrlimit(resource.RLIMIT_NPROC, (limits.max_processes,) * 2)
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    return apply


def run_program(program: str, tests: str, limits: Limits = Limits()) -> RunResult:
    """Run `program` followed by `tests` (plain Python, asserts) in the sandbox.
    passed: exit status 0; failed: non-zero (an assertion, an exception, a limit hit);
    timeout: killed at the time limit."""
    with tempfile.TemporaryDirectory(prefix="protege-sandbox-") as work:
        path = os.path.join(work, "solution.py")
        with open(path, "w") as f:
            f.write(program + "\n\n" + tests + "\n")
        if os.geteuid() == 0:
            os.chown(work, NOBODY, NOBODY)
            os.chown(path, NOBODY, NOBODY)
        cmd = [*isolation_prefix(), sys.executable, "-I", "-B", "solution.py"]
        return _run(cmd, work, limits)


def _run(cmd: list[str], work: str, limits: Limits) -> RunResult:
    out_path, err_path = os.path.join(work, ".stdout"), os.path.join(work, ".stderr")
    env = {"PATH": "/usr/bin:/bin", "HOME": work, "TMPDIR": work, "PYTHONHASHSEED": "0"}
    t0 = time.monotonic()
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        proc = subprocess.Popen(cmd, cwd=work, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=err, env=env, start_new_session=True,
                                preexec_fn=_limit(limits))  # fmt: skip
        try:
            code = proc.wait(timeout=limits.timeout_s)
            status = "passed" if code == 0 else "failed"
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the namespace's init dies: so does the rest
            proc.wait()
            code, status = None, "timeout"
    stdout, stderr = (_head(p, limits.max_output_chars) for p in (out_path, err_path))
    return RunResult(status, code, stdout, stderr, time.monotonic() - t0)


def _head(path: str, n: int) -> str:
    with open(path, errors="replace") as f:
        return f.read(n)
