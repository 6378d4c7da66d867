"""Where score's units run: one after the other in this process, or one
Dask task each on a local cluster (one worker per GPU) or the cluster at
--scheduler; and the driver's view of the run (Tracker): the progress
bar, failures, and each file assembled as soon as its last unit is in.
Dask is imported only when a cluster is used."""
from __future__ import annotations

import logging
import os
import threading
import time
import uuid

from attninf.errors import AttninfError, one_line
from attninf.pipelines.score_config import ScoreConfig, extra_tags
from attninf.pipelines.units import Unit, assemble
from attninf.pipelines.workers import progress_to, score_unit

log = logging.getLogger("attninf")


def dask_client(cfg: ScoreConfig, workers: int):
    try:
        from distributed import Client, LocalCluster
    except ImportError as e:
        raise AttninfError("dask[distributed] is not installed: pip install 'dask[distributed]', "
                           "or score in this process with --workers 0") from e
    address = cfg.scheduler or os.environ.get("DASK_SCHEDULER_ADDRESS")
    if address:
        try:
            return Client(address, timeout="20s"), None
        except OSError as e:
            raise AttninfError(f"cannot reach the Dask scheduler at {address}: {one_line(e)}") from e
    if not log.isEnabledFor(logging.INFO):  # Dask's own INFO lines only with --verbose
        for name in ("distributed", "distributed.scheduler", "distributed.nanny", "distributed.worker",
                     "distributed.core", "distributed.http.proxy"):
            logging.getLogger(name).setLevel(logging.ERROR)
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                           dashboard_address=None, silence_logs=logging.ERROR)
    return Client(cluster), cluster


def default_workers(device: str) -> int:
    """One worker per GPU on a machine with several; otherwise none: this
    process scores, and a single device does not pay for a cluster."""
    import torch

    if device in ("auto", "cuda") and torch.cuda.is_available() and torch.cuda.device_count() > 1:
        return torch.cuda.device_count()
    return 0


def check_workers(cfg: ScoreConfig, workers: int) -> None:
    import torch

    if workers < 0:
        raise AttninfError(f"--workers cannot be negative, got {workers}")
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if (cfg.scheduler is None and gpus and cfg.device in ("auto", "cuda") and workers > gpus
            and not cfg.share_gpus):
        raise AttninfError(f"--workers {workers} on {gpus} GPU(s) would put two workers on one GPU: "
                           "use --workers <= the GPU count, or --share-gpus")


def resources(spec: str | None) -> dict[str, float] | None:
    """--resources GPU=1,MEM=8e9 -> {"GPU": 1.0, "MEM": 8e9}."""
    if not spec:
        return None
    out = {}
    for item in spec.split(","):
        name, _, value = item.partition("=")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            raise AttninfError(f"--resources {spec!r}: expected NAME=AMOUNT[,NAME=AMOUNT]") from None
    return out


class Tracker:
    """The driver's view of a run: which units each file still waits for, a
    bar over documents (tokens/s, failed units, ETA), failures with file and
    row range; a file is assembled as soon as its last unit is in."""

    def __init__(self, cfg: ScoreConfig, plan: dict[str, list[Unit]], todo: list[Unit], failures: dict,
                 say, show: bool):
        from tqdm.auto import tqdm

        self.cfg, self.plan, self.failures, self.say = cfg, plan, failures, say
        self.waiting = {rel: {u for u in todo if u.file == rel} for rel in plan}
        self.bar = tqdm(total=sum(u.rows for u in todo), unit="doc", disable=not show, dynamic_ncols=True,
                        desc="score")
        self.tokens, self.failed_units, self.assembled = 0, 0, []
        self.partial: dict[str, list[int]] = {}  # unit -> [rows, tokens] reported by its batches so far
        self.ended: set[str] = set()  # units finished or failed: a late batch report of theirs is ignored
        self.lock = threading.Lock()  # Dask's reports arrive on the client's thread
        self.ran_on: dict[str, dict[str, int]] = {rel: {} for rel in plan}  # file -> worker -> units
        self.t0 = time.perf_counter()

    def assemble_ready(self, files=None) -> None:
        """Assemble those of `files` (default: all) whose every unit is in and none failed."""
        for rel in list(self.waiting if files is None else files):
            if (rel in self.waiting and not self.waiting[rel]
                    and not any(k.startswith(f"{rel}[") for k in self.failures)):
                assemble(self.cfg.out, rel, self.plan[rel], self.ran_on[rel], self.cfg.save_token_stats,
                         extra_tags(self.cfg))
                self.assembled.append(rel)
                del self.waiting[rel]

    def advance(self, unit, rows: int, tokens: int) -> None:
        """A batch of a unit is scored: the bar moves before the unit ends
        (a retried unit's batches count once, up to the unit's rows)."""
        with self.lock:
            if unit is None or str(unit) in self.ended:
                return
            done = self.partial.setdefault(str(unit), [0, 0])
            rows = min(rows, max(0, unit.rows - done[0]))
            done[0] += rows
            done[1] += tokens
            self.tokens += tokens
            self.bar.update(rows)
            self.bar.set_postfix_str(f"{self.tokens_per_s():,.0f} tok/s, {self.failed_units} failed unit(s)")

    def finished(self, unit: Unit, result: dict | None = None, error: str | None = None) -> None:
        with self.lock:
            self.ended.add(str(unit))
            rows_seen, tokens_seen = self.partial.pop(str(unit), [0, 0])
            # the unit's own total replaces its batches' reports
            self.tokens += (0 if error is not None else result["tokens"]) - tokens_seen
        if error is not None:
            self.failures[str(unit)] = error
            self.failed_units += 1
            self.say(f"failed: {unit}: {error}")
        else:
            log.info("%s: %d rows, %d tokens on worker %s in %.1fs", unit, unit.rows, result["tokens"],
                     result["worker"], result["seconds"])
            ran = self.ran_on[unit.file]
            ran[result["worker"]] = ran.get(result["worker"], 0) + 1
            self.waiting[unit.file].discard(unit)
            self.assemble_ready([unit.file])
        self.bar.update(unit.rows - rows_seen)
        self.bar.set_postfix_str(f"{self.tokens_per_s():,.0f} tok/s, {self.failed_units} failed unit(s)")

    def tokens_per_s(self) -> float:
        return self.tokens / max(time.perf_counter() - self.t0, 1e-9)


def score_here(cfg: ScoreConfig, todo: list[Unit], tracker: Tracker) -> None:
    """--workers 0: every unit in this process, one after the other."""
    if cfg.threads:
        import torch

        torch.set_num_threads(cfg.threads)
    for unit in todo:
        try:
            tracker.finished(unit, score_unit(cfg, unit, progress=tracker.advance))
        except AttninfError as e:
            raise AttninfError(f"{unit}: {e}") from e
        except Exception as e:  # noqa: BLE001 - one bad unit must not stop the others
            tracker.finished(unit, error=one_line(e))


def score_on_dask(cfg: ScoreConfig, todo: list[Unit], workers: int, tracker: Tracker) -> None:
    """One task per unit on a local cluster (or the one at --scheduler); as
    workers free up they take the next unit, whichever file it is from."""
    from distributed import as_completed

    client, cluster = dask_client(cfg, workers)
    threads = cfg.threads or (None if cluster is None else max(1, (os.cpu_count() or 1) // workers))
    run = uuid.uuid4().hex[:8]
    topic = f"attninf-progress-{run}"
    units = {str(u): u for u in todo}
    # batches report from the workers as events; the handler runs on the client's thread
    client.subscribe_topic(topic, lambda event: tracker.advance(units.get(event[1]["unit"]), event[1]["rows"],
                                                                event[1]["tokens"]))
    try:
        futs = {client.submit(score_unit, cfg, u, threads, progress_to(topic), pure=False,
                              resources=resources(cfg.resources), key=f"attninf-score-{run}-{u}"): u for u in todo}
        for fut in as_completed(futs):
            unit = futs[fut]
            try:
                tracker.finished(unit, fut.result())
            except AttninfError as e:
                raise AttninfError(f"{unit}: {e}") from e
            except Exception as e:  # noqa: BLE001 - includes KilledWorker after retries
                tracker.finished(unit, error=one_line(e))
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
