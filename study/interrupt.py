"""SIGTERM is Ctrl-C: ``timeout``, ``ray job stop``, Kubernetes and Slurm stop a process
with SIGTERM, and every long command of oodstudy (``run``, ``resume``, ``trial``,
``store compact``) then stops as it does on Ctrl-C: gracefully where a graceful stop is
armed (Ray Tune's handler during a sweep saves the experiment), else by raising
KeyboardInterrupt, which the CLI turns into one line and exit code 130."""

from __future__ import annotations

import contextlib
import signal
import threading


def on_sigterm(signum: int, frame) -> None:
    """Do what SIGINT would do now: call its Python handler, else raise KeyboardInterrupt."""
    handler = signal.getsignal(signal.SIGINT)
    if callable(handler):
        handler(signal.SIGINT, frame)
        return
    raise KeyboardInterrupt


def stop_on_sigterm() -> None:
    """Route SIGTERM to :func:`on_sigterm` (main thread only; called again after
    ``ray.init``, which installs a SIGTERM handler of its own)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, on_sigterm)


def reset_ctrl_c() -> None:
    """Ctrl-C raises KeyboardInterrupt again (main thread only): Ray Tune's graceful-stop
    handler stays installed after a ``fit`` that ended without a signal, and would swallow
    the next Ctrl-C of the process (a later command run in the same process)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)


def leave_ray(timeout_s: float = 5.0) -> bool:
    """At the end of a command that failed or was interrupted: stop the Ray this process
    started, without printing the errors of trials nobody collected (the command's last
    line sums them up).  False when stopping does not return within ``timeout_s`` (a
    SIGTERM sent to the whole process group stopped a Ray's GCS too, and Ray's exit handler
    would wait a minute for it, then abort the process with exit code 1): the caller then
    ends the process itself."""
    import os
    import sys

    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return True
    os.environ["RAY_IGNORE_UNHANDLED_ERRORS"] = "1"  # read by Ray each time it would print one
    done = threading.Event()

    def shutdown() -> None:
        ray.shutdown()
        done.set()

    threading.Thread(target=shutdown, name="ray-shutdown", daemon=True).start()
    return done.wait(timeout_s)


@contextlib.contextmanager
def sigterm_blocked():
    """Block SIGTERM in this thread while the body runs: processes started meanwhile
    inherit the blocked signal (the embedded Ray's, see ``study.tune.runner.connect_ray``);
    one that arrives meanwhile is delivered when the body ends."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
