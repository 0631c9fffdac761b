"""Background train / prune / fine-tune / adapt / ingest jobs, each in its own worker process (queries stay fast).

Job state lives in the database: the worker writes progress, metrics and a log tail there and reads the
``cancelling`` flag from it, so the API process and the worker share nothing else.
"""
import json
import logging
import multiprocessing as mp
import queue
import threading
import traceback
from typing import Any, Dict, Optional

from storage import crud
from storage.db import ACTIVE_JOB_STATES, JobKind, JobState, make_engine, make_sessionmaker

__all__ = ['JobManager', 'run_job', 'job_config']

_logger = logging.getLogger(__name__)


def _summarise(values: Dict[str, Any]) -> Dict[str, Any]:
    return {k: (round(v, 5) if isinstance(v, float) else v) for k, v in values.items()
            if isinstance(v, (int, float, str, bool)) or v is None}


def _yield_to_queries(nice: int) -> None:
    """A job must not slow the queries down: on Linux the worker runs under SCHED_IDLE (it gets a core only when
    the service does not want it, and is preempted at once when it does), elsewhere at ``nice``; it also leaves
    one core to the service."""
    import os

    import torch
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):  # not Linux, or not permitted
        if nice:
            os.nice(nice)
    torch.set_num_threads(max(1, (os.cpu_count() or 1) - 1))


def job_config(kind: JobKind, params: Dict[str, Any], out_dir: str, job_id: int):
    """The run a job stands for: its kind's config from the stored parameters plus the server's own fields."""
    from pruning.config import PruneConfig
    from reid.config import AdaptConfig, TrainConfig
    if kind == JobKind.TRAIN:
        return TrainConfig(output_dir=out_dir, name=f'job{job_id}', **params)
    if kind == JobKind.ADAPT:
        return AdaptConfig(output_dir=out_dir, name=f'job{job_id}', **params)
    if kind == JobKind.FINETUNE:  # a prune run that removes nothing
        params = dict(params, prune_mode='attn', prune_rate=0.0, iter_nums=1, finetune_nums=0)
    return PruneConfig(output_dir=out_dir, name=f'job{job_id}', **params)


def run_job(job_id: int, database_url: str, data_dir: str, nice: int = 10) -> None:
    """Worker-process entry point: run the job recorded in the database and record how it ended."""
    from pathlib import Path

    _yield_to_queries(nice)

    from app.registry import ensure_onnx, register_checkpoint
    from pruning.schedule import prune
    from reid.engine import train
    from reid.progress import Cancelled, Progress

    logging.basicConfig(level=logging.INFO)
    Session = make_sessionmaker(make_engine(database_url))
    with Session.begin() as s:
        job = crud.get_job(session=s, job_id=job_id)
        if job is None or job.state != JobState.QUEUED:
            return
        kind, params = JobKind(job.kind), dict(job.params)
        crud.update_job(session=s, job_id=job_id, state=JobState.RUNNING, log_line=f'started {kind} job')

    def on_progress(event: Progress) -> bool:
        info = _summarise(event.flat())
        with Session.begin() as s:
            job = crud.update_job(session=s, job_id=job_id, progress=float(event.progress), current=info,
                                  log_line=json.dumps(info),
                                  **({'metrics': _summarise(event.metrics)} if event.metrics else {}))
            return job is not None and job.state == JobState.CANCELLING

    try:
        if kind == JobKind.INGEST:
            _ingest(params, Session, database_url, data_dir, on_progress, job_id)
            return
        cfg = job_config(kind, params, str(Path(data_dir) / 'runs'), job_id)
        if kind == JobKind.ADAPT:  # without a folder it reads the gallery: the service's database and image store
            from app.adaptation import run_adapt
            from storage.images import ImageStore
            summary = run_adapt(cfg, Session, ImageStore(Path(data_dir) / 'images'), on_progress=on_progress)
        else:
            run = train if kind == JobKind.TRAIN else prune
            summary = run(cfg, progress=False, on_progress=on_progress)
        on_progress(Progress('export', 1.0))
        ensure_onnx(summary.checkpoint)  # the ONNX Runtime backend can serve it as soon as it is activated
        with Session.begin() as s:
            model = register_checkpoint(s, summary.checkpoint, name=f'{kind} job {job_id}', info=dict(job_id=job_id))
            crud.update_job(session=s, job_id=job_id, state=JobState.SUCCEEDED, progress=1.0,
                            result_model_id=model.id, metrics=_summarise(summary.metrics),
                            log_line=f'done: model {model.id} at {summary.checkpoint}')
    except Cancelled:
        with Session.begin() as s:
            crud.update_job(session=s, job_id=job_id, state=JobState.CANCELLED, log_line='cancelled')
    except Exception as e:  # any failure is reported through the API, not lost in the worker
        with Session.begin() as s:
            # the job's log is served by the API: the traceback without chained causes (a parser's message can
            # quote the file it read); the worker's own log keeps everything
            _logger.exception('job %d failed', job_id)
            crud.update_job(session=s, job_id=job_id, state=JobState.FAILED, error=f'{e.__class__.__name__}: {e}',
                            log_line=''.join(traceback.format_exception(e, limit=5, chain=False)))


def _ingest(params: Dict[str, Any], Session, database_url: str, data_dir: str, on_progress, job_id: int) -> None:
    from pathlib import Path

    from app.ingest import IngestParams, active_visible_share, run_ingest, tracks_file
    from storage.images import ImageStore
    # the service's image store; its content locks on PostgreSQL need the database
    summary = run_ingest(IngestParams(**params), Session, make_engine(database_url),
                         ImageStore(Path(data_dir) / 'images'), on_progress, job_id=job_id,
                         tracks_path=tracks_file(Path(data_dir), job_id),
                         visible_share=active_visible_share(Session))
    with Session.begin() as s:
        crud.update_job(session=s, job_id=job_id, state=JobState.SUCCEEDED, progress=1.0, metrics=summary,
                        log_line=f'done: {summary["sightings"]} sightings, {summary["crops"]} crops from '
                                 f'{summary["frames"]} frames')


class JobManager:
    """Queues jobs and runs at most ``max_workers`` worker processes at once."""

    def __init__(self, Session, database_url: str, data_dir: str, max_workers: int = 1,
                 cancel_grace_seconds: float = 20.0, nice: int = 10) -> None:
        self.Session = Session
        self.nice = nice
        self.database_url = database_url
        self.data_dir = data_dir
        self.cancel_grace_seconds = cancel_grace_seconds
        self._ctx = mp.get_context('spawn')
        self._queue: 'queue.Queue[int]' = queue.Queue()
        self._procs: Dict[int, Any] = {}
        self._slots = threading.Semaphore(max_workers)
        self._stopping = False
        self._dispatcher = threading.Thread(target=self._dispatch, name='job-dispatcher', daemon=True)
        self._dispatcher.start()

    def submit(self, kind: JobKind, params: Dict[str, Any]) -> int:
        with self.Session.begin() as s:
            job_id = crud.create_job(session=s, kind=kind, params=params).id
        self._queue.put(job_id)
        return job_id

    def _dispatch(self) -> None:
        while True:
            job_id = self._queue.get()
            self._slots.acquire()
            with self.Session() as s:
                job = crud.get_job(session=s, job_id=job_id)
                if job is None or job.state != JobState.QUEUED:  # cancelled while waiting
                    self._slots.release()
                    continue
            proc = self._ctx.Process(target=run_job, args=(job_id, self.database_url, self.data_dir, self.nice),
                                     name=f'amg-job-{job_id}', daemon=True)
            proc.start()
            self._procs[job_id] = proc
            threading.Thread(target=self._watch, args=(job_id, proc), daemon=True).start()

    def _watch(self, job_id: int, proc) -> None:
        proc.join()
        self._procs.pop(job_id, None)
        self._slots.release()
        with self.Session.begin() as s:
            job = crud.get_job(session=s, job_id=job_id)
            if job is not None and job.state in ACTIVE_JOB_STATES:  # the worker died before recording an outcome
                if self._stopping:
                    outcome, error = JobState.INTERRUPTED, 'the service stopped while the job was running'
                elif job.state == JobState.CANCELLING:
                    outcome, error = JobState.CANCELLED, None
                else:
                    outcome, error = JobState.FAILED, f'worker exited with code {proc.exitcode}'
                crud.update_job(session=s, job_id=job_id, state=outcome, error=error, log_line='worker stopped')

    def cancel(self, job_id: int) -> Optional[str]:
        """Ask a job to stop (it stops at its next progress report; killed after a grace period)."""
        with self.Session.begin() as s:
            job = crud.get_job(session=s, job_id=job_id)
            if job is None:
                return None
            previous = job.state
            if previous == JobState.QUEUED:
                crud.update_job(session=s, job_id=job_id, state=JobState.CANCELLED, log_line='cancelled before start')
            elif previous == JobState.RUNNING:
                crud.update_job(session=s, job_id=job_id, state=JobState.CANCELLING, log_line='cancel requested')
                timer = threading.Timer(self.cancel_grace_seconds, self._kill, args=(job_id,))
                timer.daemon = True
                timer.start()
            return previous

    def _kill(self, job_id: int) -> None:
        proc = self._procs.get(job_id)
        if proc is not None and proc.is_alive():
            proc.terminate()

    def shutdown(self) -> None:
        self._stopping = True
        for proc in list(self._procs.values()):
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=10)
