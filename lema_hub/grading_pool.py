"""The bounded math-verify worker processes behind ``lema_hub.grading``: ``python -c`` workers
speaking JSON lines, each answer under a soft bound (``setitimer`` in the worker) and a hard bound
(the parent kills the worker). math-verify's own signal-based timeouts only work in the main thread,
so they are off and the time is bounded here instead."""

from __future__ import annotations

import atexit
import json
import logging
import os
import select
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from lema_hub.answers import compare_answers, math_key, parse_latex

DEFAULT_TIMEOUT_S = 5.0  # soft bound per answer inside the worker
HARD_MARGIN_S = 3.0  # the parent kills a worker this long after the soft bound
WORKER_START_TIMEOUT_S = 120.0  # importing sympy on a busy 2-core machine can take a while
WORKER_MEMORY_BYTES = 4 * 1024**3


# --------------------------------------------------------------------------- bounded worker pool
class _Timeout(BaseException):
    """Raised by the worker's alarm; a BaseException so library ``except Exception`` can't swallow it."""


def _run_op(op: str, args: list, timeout: float) -> list:
    """Run one op in this (worker main) thread under a setitimer alarm. Returns [status, value]."""
    import signal

    def on_alarm(signum, frame):
        raise _Timeout()

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        if op == "compare":
            return ["ok", list(compare_answers(args[0], args[1], args[2]))]
        if op == "key":
            return ["ok", math_key(args[0])]
        if op == "ping":
            return ["ok", "pong"]
        return ["error", f"unknown op {op!r}"]
    except _Timeout:
        return ["timeout", f"timed out after {timeout:g} s"]
    except MemoryError:
        return ["error", "ran out of memory"]
    except RecursionError:
        return ["error", "recursion too deep"]
    except Exception as e:  # a library bug on odd input must not kill the worker
        return ["error", f"{type(e).__name__}: {str(e)[:200]}"]
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _worker_main() -> None:
    """Entry point of a grading worker process: JSON lines in on stdin, JSON lines out."""
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # stray prints from libraries must not corrupt the protocol
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (WORKER_MEMORY_BYTES, WORKER_MEMORY_BYTES))
    except (ImportError, ValueError, OSError):
        pass
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    import math_verify  # noqa: F401  (warm the import before saying ready)

    parse_latex("1")  # warm the LaTeX parser
    proto.write(json.dumps({"ready": True}) + "\n")
    for line in sys.stdin:
        if not line.strip():
            continue
        req = json.loads(line)
        for item in req["items"]:
            out = _run_op(req["op"], item, float(req["timeout"]))
            proto.write(json.dumps(out) + "\n")


class _WorkerDied(Exception):
    pass


class _Worker:
    """One grading subprocess. Not thread-safe: a pool hands it to one thread at a time."""

    def __init__(self) -> None:
        env = dict(os.environ)
        pkg_parent = str(Path(__file__).resolve().parents[1])
        env["PYTHONPATH"] = pkg_parent + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from lema_hub.grading_pool import _worker_main; _worker_main()"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
            close_fds=True,
        )
        self._buf = b""
        msg = self._read_line(WORKER_START_TIMEOUT_S)
        if msg is None or not json.loads(msg).get("ready"):
            self.kill()
            raise _WorkerDied("grading worker did not start")

    def _read_line(self, timeout: float) -> str | None:
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                raise _WorkerDied("grading worker exited")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return line.decode()

    def run(self, op: str, items: list[list], timeout: float) -> tuple[list[list], str | None]:
        """Run ``items`` in order. Returns (results, failure): failure is None when all came back,
        else why the next item did not ("timeout": over the hard bound, or "died: ...").
        Raises _WorkerDied when the request could not even be sent (no item was in flight)."""
        payload = json.dumps({"op": op, "items": items, "timeout": timeout}) + "\n"
        try:
            self.proc.stdin.write(payload.encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError, ValueError) as e:
            raise _WorkerDied(f"grading worker pipe closed: {e}") from e
        results: list[list] = []
        for _ in items:
            try:
                line = self._read_line(timeout + HARD_MARGIN_S)
            except _WorkerDied as e:
                return results, f"died: {e}"
            if line is None:
                return results, "timeout"
            results.append(json.loads(line))
        return results, None

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except OSError:
                pass


class _Pool:
    """A bounded set of grading workers shared by threads; a worker over the hard bound is killed."""

    def __init__(self, max_workers: int) -> None:
        self.max_workers = max(1, max_workers)
        self._idle: list[_Worker] = []
        self._count = 0
        self._cond = threading.Condition()
        self._closed = False

    def _acquire(self) -> _Worker:
        with self._cond:
            while True:
                if self._closed:
                    raise _WorkerDied("grading pool is closed")
                while self._idle:
                    worker = self._idle.pop()
                    if worker.alive():
                        return worker
                    worker.kill()  # died while idle (e.g. killed by the OS): drop it
                    self._count -= 1
                if self._count < self.max_workers:
                    self._count += 1
                    break
                self._cond.wait()
        try:
            return _Worker()
        except BaseException:
            with self._cond:
                self._count -= 1
                self._cond.notify()
            raise

    def _release(self, worker: _Worker) -> None:
        with self._cond:
            if worker.alive() and not self._closed:
                self._idle.append(worker)
            else:
                worker.kill()
                self._count -= 1
            self._cond.notify()

    def run(self, op: str, items: list[list], timeout: float) -> list[list]:
        """[status, value] per item, in order. An item over the hard bound, or whose worker dies,
        is marked and its worker replaced; the remaining items go on in another worker."""
        out: list[list] = []
        failures = 0
        deaths: dict[int, int] = {}
        while len(out) < len(items):
            try:
                worker = self._acquire()
            except _WorkerDied as e:
                failures += 1
                if failures > 3:
                    out.extend(["error", f"grading worker failed: {e}"] for _ in range(len(items) - len(out)))
                continue
            try:
                got, failure = worker.run(op, items[len(out) :], timeout)
            except _WorkerDied as e:  # nothing was in flight: retry the same items elsewhere
                worker.kill()
                self._release(worker)
                failures += 1
                if failures > 3:
                    out.extend(["error", f"grading worker failed: {e}"] for _ in range(len(items) - len(out)))
                continue
            out.extend(got)
            if failure is not None:
                worker.kill()
                if failure == "timeout":
                    out.append(["timeout", f"timed out after {timeout + HARD_MARGIN_S:g} s (worker killed)"])
                elif deaths.get(len(out), 0) == 0:
                    # The worker may have died of something else (killed from outside): one retry.
                    deaths[len(out)] = 1
                else:
                    out.append(["error", f"grading worker {failure}"])
            self._release(worker)
        return out

    def close(self) -> None:
        with self._cond:
            self._closed = True
            idle, self._idle = self._idle, []
        for w in idle:
            w.kill()


_pools: dict[int, _Pool] = {}
_pools_lock = threading.Lock()


def shared_pool(workers: int | None = None) -> _Pool:
    """The shared pool with ``workers`` processes (default: max(2, CPU count)); started lazily, reused."""
    n = max(1, workers or max(2, os.cpu_count() or 2))
    with _pools_lock:
        pool = _pools.get(n)
        if pool is None or pool._closed:
            pool = _pools[n] = _Pool(n)
        return pool


@atexit.register
def shutdown() -> None:
    """Stop every grading worker (also run at exit); later calls start new ones."""
    with _pools_lock:
        pools = list(_pools.values())
        _pools.clear()
    for pool in pools:
        pool.close()


def warmup(workers: int | None = None) -> None:
    """Start the shared pool's workers now, so the first MATH grades do not pay the start-up time."""
    pool = shared_pool(workers)
    with ThreadPoolExecutor(max_workers=pool.max_workers) as ex:
        list(ex.map(lambda _: pool.run("ping", [[]], DEFAULT_TIMEOUT_S), range(pool.max_workers)))
