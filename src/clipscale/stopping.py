"""Stopping training cleanly: signals, a watched parent, and the snakemake process itself.

A training run must stop within seconds when its workflow is stopped, keep the checkpoints it
saved, and never leave a half-written one as the latest:

* in a training process, SIGINT raises ``TrainingStopped`` at once (``stop_on_signals``), except
  while a checkpoint is being saved: then right after the save; SIGTERM and the walltime warning
  SIGUSR1 (``sbatch --signal``, Slurm's preemption and requeue send SIGTERM) ask it to stop *and
  keep its place*: it finishes its step, a partial checkpoint is saved and every rank stops at
  that step (``clipscale.resume.step_boundary``);
* the launcher (the rule's script process) runs the training command in its own session and
  passes SIGINT/SIGTERM, or its own parent's exit, on to that process group
  (``run_until_stopped``); a training process also stops when its launcher is gone;
* Snakemake's local executor never signals a job's processes: on SIGINT or SIGTERM it waits for
  the running jobs (snakemake 9.27: ``scheduling/job_scheduler.py`` exit_gracefully,
  ``executors/local.py`` cancel). ``forward_to_launchers``, installed by the Snakefile's
  ``onstart``, makes a SIGINT/SIGTERM to snakemake reach the launchers of this host (each
  registers itself in ``LAUNCHER_REGISTRY_ENV``'s folder while it runs).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger("clipscale.train")

LAUNCHER_ENV = "CLIPSCALE_LAUNCHER"  # host:pid of the launcher, watched by training processes
LAUNCHER_REGISTRY_ENV = "CLIPSCALE_LAUNCHER_REGISTRY"  # folder where running launchers register
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
WALLTIME_SIGNAL = signal.SIGUSR1  # sbatch --signal=USR1@<lead>: the job's time limit is near
SAVE_SIGNALS = (signal.SIGTERM, WALLTIME_SIGNAL)  # stop at the next step, after saving the place
STOP_GRACE_S = 30  # how long the launcher waits for stopped training processes before SIGKILL


class TrainingStopped(BaseException):
    """A stop signal reached a training process. A BaseException like KeyboardInterrupt, so that
    no ``except Exception`` on its way (webdataset's handlers skip samples that way) swallows it."""

    def __init__(self, signum: int, why: str = ""):
        self.signum, self.why = signum, why
        super().__init__(f"stopped by {signal.Signals(signum).name}" + (f" ({why})" if why else ""))


def _alive(pid: int) -> bool:
    """pid runs (a zombie has ended: nobody may reap it in a container)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return True


def _saving(frame) -> bool:
    """The interrupted code is inside torch.save (a checkpoint being written)."""
    serialization = sys.modules.get("torch.serialization")
    if serialization is None:
        return False
    codes = {f.__code__ for f in (getattr(serialization, n, None) for n in ("save", "_save")) if f}
    while frame is not None:
        if frame.f_code in codes:
            return True
        frame = frame.f_back
    return False


class StopSignals:
    """Stop signals in a training process.

    SIGINT: raise TrainingStopped at once, except while a checkpoint is being saved: then when
    the save is done (``check()``, called before each step and after open_clip returns), so a
    stop never leaves a half-written checkpoint as the latest.

    SIGTERM, SIGUSR1 (the walltime warning): ``save_requested``; the next step boundary saves a
    partial checkpoint and raises TrainingStopped (``clipscale.resume.step_boundary``), with
    ``place`` saying where (a SIGTERM may arrive twice: from Slurm and from the launcher).

    Data worker processes ignore these signals (``keep_data_workers_through_stops``): the
    training process shuts them down as it exits."""

    def __init__(self):
        self.owner = os.getpid()
        self.signum: int | None = None
        self.pending = False
        self.save_requested = False
        self.place: dict | None = None
        self.why = ""

    def handle(self, signum, frame) -> None:
        if os.getpid() != self.owner:
            return
        if signum in SAVE_SIGNALS:
            if not self.save_requested:
                log.warning("%s received: stopping after this step, with a checkpoint of it%s",
                            signal.Signals(signum).name,
                            " (the walltime warning)" if signum == WALLTIME_SIGNAL else "")
            self.signum = self.signum or signum
            self.save_requested = True
            return
        self.signum = signum
        if _saving(frame):
            if not self.pending:
                log.warning("%s received while a checkpoint is being saved: stopping after the save",
                            signal.Signals(signum).name)
            self.pending = True
            return
        raise TrainingStopped(signum, self.why)

    def check(self) -> None:
        if self.pending:
            self.pending = False
            raise TrainingStopped(self.signum, self.why)


_stop: StopSignals | None = None


def current() -> StopSignals | None:
    """The StopSignals of this process while ``stop_on_signals`` is active."""
    return _stop


def _launcher_pid() -> int | None:
    """The launcher's pid when it runs on this host (an srun task may run on another node)."""
    host, _, pid = os.environ.get(LAUNCHER_ENV, "").rpartition(":")
    return int(pid) if host == socket.gethostname() and pid.isdigit() else None


def _watch_parent(stop: StopSignals, done: threading.Event) -> None:
    """Send SIGTERM to this process when its parent or the launcher exits: a training process
    must not outlive the job that started it (snakemake gone, launcher SIGKILLed)."""
    parent, launcher = os.getppid(), _launcher_pid()
    while not done.wait(1.0):
        if os.getppid() != parent:
            stop.why = f"parent process {parent} exited"
        elif launcher is not None and not _alive(launcher):
            stop.why = f"launcher process {launcher} exited"
        else:
            continue
        log.warning("%s: stopping", stop.why)
        os.kill(os.getpid(), signal.SIGTERM)
        return


@contextmanager
def stop_on_signals(watch_parent: bool = True):
    """Install StopSignals for SIGINT/SIGTERM (and the parent watch) in this, the main, thread."""
    global _stop
    stop = StopSignals()
    previous = {s: signal.signal(s, stop.handle) for s in (*STOP_SIGNALS, WALLTIME_SIGNAL)}
    _stop, done = stop, threading.Event()
    if watch_parent:
        threading.Thread(target=_watch_parent, args=(stop, done), daemon=True).start()
    try:
        yield stop
    finally:
        done.set()
        for s, handler in previous.items():
            # past its training a process has no place to save: a late walltime warning must
            # not kill it by SIGUSR1's default action while it exits (a finished run would fail)
            signal.signal(s, signal.SIG_IGN if s == WALLTIME_SIGNAL and handler == signal.SIG_DFL else handler)
        _stop = None


def keep_data_workers_through_stops() -> None:
    """Make torch's data worker processes ignore SIGINT, SIGTERM and SIGUSR1.

    A stop reaches the whole process group of the training (the launcher's ``killpg``, Slurm's
    scancel and walltime warning), the data workers too. torch's worker handler for SIGTERM
    exits unless its parent sent it; if a worker died before the training process had handled
    its own SIGTERM (seen on a loaded CI machine), the batch it owed never came and the attempt
    ended "DataLoader worker exited unexpectedly", its place lost. With the workers serving on,
    the training process finishes its step and saves its place; it then shuts them down (torch
    sends them a sentinel; a worker whose parent died exits by torch's watchdog, and the
    launcher kills what is left of the group). Patches the name torch's ``_worker_loop`` calls
    first in a worker (``torch.utils.data._utils.signal_handling._set_worker_signal_handlers``,
    torch 2.14; workers are forked, so the patch is inherited)."""
    from torch.utils.data._utils import signal_handling

    original = signal_handling._set_worker_signal_handlers
    if getattr(original, "_clipscale", False):
        return

    def set_worker_signal_handlers(*args):
        original(*args)  # SIGSEGV, SIGBUS, SIGFPE still report and kill the worker
        for s in (*STOP_SIGNALS, WALLTIME_SIGNAL):
            signal.signal(s, signal.SIG_IGN)

    set_worker_signal_handlers._clipscale = True
    signal_handling._set_worker_signal_handlers = set_worker_signal_handlers


def end_data_workers() -> None:
    """Kill this process's data workers that still run as it exits after an error: they ignore
    SIGTERM (``keep_data_workers_through_stops``), and Python's exit (multiprocessing's handler)
    sends them SIGTERM, then waits for them: forever (a failed checkpoint save hung a job so)."""
    import multiprocessing

    for worker in multiprocessing.active_children():
        if worker.daemon:
            worker.kill()
            worker.join(timeout=10)


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def run_until_stopped(cmd: list[str], stdout=None, grace_s: float = STOP_GRACE_S,
                      environ: dict | None = None) -> tuple[int, str | None]:
    """Run the training command and wait; return (exit status, why it was stopped or None).

    Why not ``subprocess.call``: Snakemake's local executor never signals a job's processes (on
    SIGINT or SIGTERM it waits for running jobs; a terminal's Ctrl-C reaches the job's script
    because it shares snakemake's process group; a killed snakemake leaves the script behind),
    and a signal reaching this process alone did not reach the training processes, which went
    on and wrote run.json. So the command runs in its own session (a process group: python,
    torchrun or srun, and what they start in it), and on SIGINT/SIGTERM to this process, or when
    this process's parent exits, the signal goes to that group (srun gets SIGTERM: its first
    SIGINT only prints status); after ``grace_s`` what is left is killed. The walltime warning
    SIGUSR1 is passed on the same way (Slurm signals the processes of a job step itself; this is
    for a launcher outside one, and for a user's ``kill -USR1``).
    """
    received: list[int] = []
    registered = _register_launcher()
    in_main = threading.current_thread() is threading.main_thread()
    previous = {s: signal.signal(s, lambda signum, frame: received.append(signum))
                for s in (*STOP_SIGNALS, WALLTIME_SIGNAL)} if in_main else {}
    parent = os.getppid()
    env = {**(os.environ if environ is None else environ), LAUNCHER_ENV: f"{socket.gethostname()}:{os.getpid()}"}
    proc = None
    try:
        proc = subprocess.Popen(cmd, stdout=stdout, stderr=subprocess.STDOUT if stdout else None,
                                env=env, start_new_session=True)
        while True:
            try:
                return proc.wait(timeout=0.5), None
            except subprocess.TimeoutExpired:
                pass
            if received or os.getppid() != parent:
                break
        sig = received[0] if received else signal.SIGTERM
        why = (f"received {signal.Signals(sig).name}" if received
               else f"its parent process {parent} exited")
        if os.path.basename(cmd[0]) == "srun" and sig == signal.SIGINT:
            sig = signal.SIGTERM  # srun forwards SIGTERM and SIGUSR1 to the tasks
        log.warning("launcher: %s: sending %s to the training processes (process group %d); "
                    "waiting up to %d s", why, signal.Signals(sig).name, proc.pid, grace_s)
        _signal_group(proc.pid, sig)
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            log.warning("launcher: training processes still running after %d s: killing them", grace_s)
            _signal_group(proc.pid, signal.SIGKILL)
            proc.wait()
        _signal_group(proc.pid, signal.SIGKILL)  # leftovers (e.g. data workers); normally none
        return proc.returncode, why
    finally:
        if proc is not None and proc.poll() is None:  # an error here: leave nothing behind
            _signal_group(proc.pid, signal.SIGKILL)
            proc.wait()
        for s, handler in previous.items():
            signal.signal(s, handler)
        if registered is not None:
            registered.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------
# the snakemake process: pass a stop on to the launchers of this host


def _register_launcher() -> Path | None:
    """Put this launcher (host-pid) in the registry folder named by LAUNCHER_REGISTRY_ENV, if any,
    so that a SIGINT/SIGTERM to snakemake reaches it (``forward_to_launchers``)."""
    folder = os.environ.get(LAUNCHER_REGISTRY_ENV)
    if not folder:
        return None
    entry = Path(folder) / f"{socket.gethostname()}-{os.getpid()}"
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        entry.write_text(" ".join(sys.argv)[:1000])
    except OSError as e:
        log.warning("launcher: cannot register in %s (%s): stopping snakemake will not stop it", folder, e)
        return None
    return entry


def signal_launchers(folder: str | Path, sig: int = signal.SIGTERM) -> list[int]:
    """Send ``sig`` to every live launcher of this host registered in ``folder``; returns their
    pids. Entries of other hosts (a shared file system) are left alone; stale ones removed."""
    host = socket.gethostname()
    sent = []
    for entry in sorted(Path(folder).glob(f"{host}-*")):
        pid = entry.name.rpartition("-")[2]
        if not pid.isdigit():
            continue
        if not _alive(int(pid)):
            entry.unlink(missing_ok=True)
            continue
        try:
            os.kill(int(pid), sig)
            sent.append(int(pid))
        except ProcessLookupError:
            entry.unlink(missing_ok=True)
    return sent


def forward_to_launchers(folder: str | Path) -> None:
    """In the snakemake process (the Snakefile's ``onstart``, after Snakemake installed its own
    handlers): on SIGINT or SIGTERM, first send SIGTERM to this host's running launchers, which
    stop their training within seconds, then let Snakemake handle the signal as it would
    (SIGINT: cancel and exit; SIGTERM: exit once the running jobs end). Sets LAUNCHER_REGISTRY_ENV
    for the jobs it starts."""
    folder = Path(folder).absolute()
    folder.mkdir(parents=True, exist_ok=True)
    os.environ[LAUNCHER_REGISTRY_ENV] = str(folder)
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in STOP_SIGNALS:
        previous = signal.getsignal(sig)
        if previous == signal.SIG_IGN:  # e.g. SIGINT of a background job: stays ignored
            continue

        def handler(signum, frame, previous=previous):
            pids = signal_launchers(folder)
            if pids:
                log.warning("%s: stopping the training launchers %s", signal.Signals(signum).name, pids)
            if callable(previous):
                previous(signum, frame)
            elif previous == signal.SIG_DFL:
                signal.signal(signum, signal.SIG_DFL)
                os.kill(os.getpid(), signum)

        signal.signal(sig, handler)


def ignore_walltime_warning() -> None:
    """In a Slurm job, the walltime warning (``sbatch --signal=USR1@<lead>``) reaches every
    process of the job step: the snakemake process running the job must not die of it (SIGUSR1's
    default action), the training processes handle it. Called by the Snakefile; the rule's
    script inherits the disposition and ``run_until_stopped`` replaces it."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(WALLTIME_SIGNAL, signal.SIG_IGN)
