"""torchrun jobs: which job a worker belongs to, and the run folder that job owns, so that its restarts resume.

torchrun tells each worker its job (``TORCHELASTIC_RUN_ID``: ``--rdzv-id``, or the id that
``--standalone`` makes) and how often its agent restarted the workers. A job with an id of its
own records it in its run folder (``job.json``); when torchrun restarts the workers after a
failure (``--max-restarts``), or the same command is launched again, rank 0 finds that folder
and every rank resumes from its ``last.pt``. A folder of another job, or of no job, is refused.
"""

from __future__ import annotations

import glob
import os
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

from cnnspec.errors import RunFolderError
from cnnspec.train.distributed import World, broadcast
from cnnspec.train.rundir import LAST, RunDir

NO_ID = "none"  # torchrun's --rdzv-id when none is given: shared by every such job, so no job's own


@dataclass(frozen=True)
class Job:
    """The torchrun job of this worker."""

    id: str | None  # its own id; None under torchrun's default id 'none'
    restart: int = 0  # TORCHELASTIC_RESTART_COUNT: how often this node's agent restarted its workers


def current_job() -> Job | None:
    """This worker's torchrun job, from the environment torchrun gives it; None outside torchrun."""
    run_id = os.environ.get("TORCHELASTIC_RUN_ID")
    if run_id is None:
        return None
    try:
        restart = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
    except ValueError:
        restart = 0
    return Job(None if run_id.strip() in ("", NO_ID) else run_id, restart)


def owned_folder(job: Job, name: str, output: str | None, base: str = "runs") -> Path | None:
    """The run folder ``job`` already owns, or None (there is none yet: make one as usual).

    With ``output``: that folder if it records the job; a new or empty one is None; any other
    is refused (RunFolderError, one line saying what to do). Without: the newest ``base/NAME-*``
    that records the job, if the job has an id."""
    if output:
        path = Path(output)
        if not path.is_dir() or not any(path.iterdir()):
            return None
        owner = RunDir(path).read_job()
        if job.id is not None and owner == job.id:
            return path
        raise RunFolderError(taken_message(path, job, owner))
    if job.id is None or not Path(base).is_dir():
        return None
    mine = [p for p in Path(base).glob(f"{glob.escape(name)}-*")
            if p.is_dir() and not p.is_symlink() and RunDir(p).read_job() == job.id]
    return max(mine, key=lambda p: p.name) if mine else None


def taken_message(path: Path, job: Job, owner: str | None) -> str:
    """Why ``job`` may not write the non-empty folder ``path`` (``owner``: the job recorded there), and what to do."""
    if owner is not None:
        return (f"{path}: the output folder holds the run of torchrun job '{owner}', not of this job "
                f"('{job.id or NO_ID}'); pass another --output, or launch with --rdzv-id={owner} to continue that run")
    if job.id is None:
        return (f"{path}: the output folder exists and is not empty; pass another --output (for torchrun "
                "restarts to resume a run folder, give the job an id of its own: torchrun --rdzv-id=ID)")
    return (f"{path}: the output folder exists and is not empty, and it is not torchrun job '{job.id}''s; "
            f"pass another --output (cnnspec run --resume {path} continues the run it holds)")


def restart_warning(job: Job) -> str | None:
    """What to say when torchrun restarted the workers of a job without an id: it starts again."""
    if job.id is not None or job.restart == 0:
        return None
    return (f"cnnspec: warning: torchrun restarted the workers (restart {job.restart}), but the job has no id of "
            "its own, so training starts again in a new run folder; launch with --rdzv-id=ID (or --standalone) "
            "to resume from the last checkpoint")


def locate(job: Job, name: str, output: str | None, world: World) -> tuple[Path | None, bool]:
    """The folder ``job`` owns and whether it holds a checkpoint to resume: rank 0 looks
    (``owned_folder``), every rank learns its answer. RunFolderError on every rank when the
    folder is refused, and on a rank that cannot see the checkpoint rank 0 found."""
    found: tuple[bool, str | None, bool] = (True, None, False)
    if world.main:
        try:
            path = owned_folder(job, name, output)
            found = (True, None if path is None else str(path), path is not None and (path / LAST).is_file())
        except RunFolderError as e:
            found = (False, str(e), False)
    warning = restart_warning(job)
    if warning and world.local_rank == 0:  # once per node: the restart count is the node's agent's
        print(warning, file=sys.stderr)
    ok, text, resume = broadcast(found, world)
    if not ok:
        raise RunFolderError(text if world.main else None)
    path = None if text is None else Path(text)
    if path is not None and resume and not (path / LAST).is_file():
        raise RunFolderError(f"rank {world.rank}: {path / LAST} is not visible on {socket.gethostname()}: "
                             "a torchrun job resumes only from a run folder that every node sees "
                             "(put --output on a shared filesystem)")
    return path, resume


def unseen_warning(job: Job, path: Path, world: World) -> str | None:
    """On a node that cannot see the run folder rank 0 made: a restart of this job could not resume."""
    if job.id is None or world.main or world.local_rank != 0 or path.is_dir():
        return None
    return (f"cnnspec: warning: rank {world.rank}: the run folder {path} is not visible on {socket.gethostname()}; "
            "if torchrun restarts this job its workers cannot resume from it (put --output on a shared filesystem)")
