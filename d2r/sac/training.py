"""Training: epochs of collection (one episode per task) then updates (spec section 5); the
`train` job (d2r/jobs/train.py) runs it. What a checkpoint holds and how a run resumes:
d2r.sac.run_state.

Graceful stop: on SIGTERM or SIGINT (d2r.runtime.signals.GracefulStop) the update in progress
finishes, a checkpoint of the exact position (mid-epoch included) is written, one line says so,
and Trainer.train raises Stopped (the job then exits with status 75, EX_TEMPFAIL: run it again
to continue).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from d2r import envs as mw
from d2r.config import RunConfig
from d2r.nets import parameter_count
from d2r.pipeline.records import code_digests
from d2r.runtime.checkpoint import checkpoint_files, save_model
from d2r.runtime.devices import resolve_device
from d2r.runtime.io import JsonlLog, atomic_write_json, dump_json
from d2r.runtime.live import LiveView
from d2r.runtime.provenance import code_version
from d2r.runtime.rundir import RunDir
from d2r.runtime.seeding import EVAL_STREAM, TRAIN_STREAM, seed_everything
from d2r.runtime.signals import GracefulStop
from d2r.sac import run_state
from d2r.sac.build import build_agent, make_run_envs
from d2r.sac.collect import Collector, Episode
from d2r.sac.evaluation import evaluate_agent
from d2r.sac.nonfinite import NonFiniteError
from d2r.sac.replay import Batch, TaskReplayBuffer
from d2r.sac.run_state import EpochProgress, Stopped


class Trainer:
    def __init__(self, run: RunConfig, out_dir: Path, progress: bool = True, stop: GracefulStop | None = None,
                 device: torch.device | None = None, bar_position: int | None = None):
        self.run, self.out_dir, self.progress = run, Path(out_dir), progress
        self.exp, self.budget = run.experiment, run.experiment.budget
        self.tasks = list(self.exp.tasks)
        self.device = device or resolve_device(run.device)  # the job passes the GPU it claimed
        self.config_json = dump_json(run.training_dict())
        self.code = code_digests("train")   # a checkpoint of other code is not resumed
        self.stop = stop
        self.bar_position = bar_position  # the progress bar's line (a group: one per seed)
        self.prefix = ""  # before each line it prints: "seed N: " in a group of seeds (d2r.sac.group)
        #: in a group of seeds, its seeds and how their updates ran (run.json "group"); None alone
        self.group: dict | None = None
        seed_everything(run.seed)

        self.envs = make_run_envs(run, TRAIN_STREAM)
        self.eval_envs = make_run_envs(run, EVAL_STREAM)
        self.agent = build_agent(run, self.device)
        net = self.agent.policy.net
        self.buffer = TaskReplayBuffer(
            len(self.tasks), max(1, self.budget.replay_size // len(self.tasks)), mw.STATE_DIM, mw.ACTION_DIM,
            net.route_shape, seed=run.seed, device=self.device,
        )
        self.collector = Collector(self.agent, self.envs, self.device, seed=run.seed,
                                   cut_on_truncation=not run.sac.bootstrap_on_truncation)
        self.epoch, self.updates, self.wall_time = 0, 0, 0.0
        self.checked_updates = 0  # updates whose device-side checks have been read (cuda_graphs on)
        self.partial: EpochProgress | None = None  # the epoch a mid-epoch checkpoint stopped in
        self._epoch_start = 0.0
        self.run_files = RunDir(self.out_dir)
        self.checkpoint_dir = self.run_files.checkpoints
        self.train_log = JsonlLog(self.run_files.train_log)
        self.eval_log = JsonlLog(self.run_files.eval_log)
        self.live = LiveView(self.run_files.tensorboard)  # `tensorboard --logdir results/E`

    # ---- checkpoints (d2r.sac.run_state) ----------------------------------------------------
    def resume(self) -> bool:
        return run_state.resume(self)

    def save(self, progress: EpochProgress | None = None) -> Path:
        return run_state.save(self, progress)

    @property
    def stop_requested(self) -> bool:
        return self.stop is not None and self.stop.signal is not None

    def stop_if_asked(self, progress: EpochProgress) -> None:
        """At a safe point within an epoch: when a signal came, write a checkpoint of exactly here
        and stop; an overlapped episode is finished first and held in the checkpoint."""
        if not self.stop_requested:
            return
        if self.collector.busy:
            self._join_collection(progress)
        self.check_deferred_faults()  # no checkpoint of an update that failed
        progress.skipped = self.agent.skipped.clone()
        progress.elapsed = time.perf_counter() - self._epoch_start
        raise Stopped(self.stop.signal, self.epoch, progress, self.save(progress))

    # ---- one epoch --------------------------------------------------------------------------
    def store(self, transitions: list) -> None:
        for transition in transitions:
            self.buffer.add(*transition)

    def updates_due(self, epoch: int) -> bool:
        return epoch >= self.budget.warmup_epochs and len(self.buffer) >= max(1, self.budget.min_replay)

    def collect_and_update(self, epoch: int, progress: EpochProgress) -> Generator[Request | None, Any,
                                                                                    dict[str, float]]:
        """One epoch's episode per task and its updates, in sequence (paper) or overlapped; stops
        (with a checkpoint) after the episode or any update when a signal came. A generator of
        units (see `units`), returning the epoch's statistics."""
        overlap = self.run.sac.overlap_collection
        if progress.success is None and not overlap:
            episode = yield Collection(self.collector)
            self.store(episode.transitions)
            progress.success = [int(s) for s in episode.success]
            self.stop_if_asked(progress)
            yield
        try:
            if progress.success is None and overlap:  # the episode runs while the learner updates on earlier data
                yield Collection(self.collector, background=True)
            due = self.updates_due(epoch) if progress.updates == 0 else True
            stats = (yield from self.train_steps(progress)) if due else {}
        finally:
            if self.collector.busy:  # also when an update failed: the thread is not left running
                self._join_collection(progress)
        if overlap:
            self.store(progress.pending)
            progress.pending = None
        return stats

    def _join_collection(self, progress: EpochProgress) -> None:
        """The overlapped episode, held until the epoch's updates are done (they must not see it)."""
        episode = self.collector.join()
        progress.success = [int(s) for s in episode.success]
        progress.pending = episode.transitions

    def train_steps(self, progress: EpochProgress) -> Generator[Batch, dict, dict[str, float]]:
        """The epoch's remaining updates: yields each one's batch and takes its statistics back (see
        `units`); returns their mean statistics."""
        n = self.budget.updates_per_epoch
        totals = progress.totals
        while progress.updates < n:
            if progress.updates:  # the first update's safe point is the episode's
                self.stop_if_asked(progress)
            stats = yield self.buffer.sample(self.budget.batch_per_task)
            for key, value in stats.items():
                totals[key] = totals.get(key, 0) + value
            progress.updates += 1
            self.updates += 1
        self.check_deferred_faults()
        # One host synchronisation per epoch, not per update.
        return {key: round(float(value) / n, 6) for key, value in totals.items()}

    def check_deferred_faults(self) -> None:
        """With cuda_graphs on, the updates keep their NaN/Inf checks on the device: read them
        (one host read) and raise the first fault since the last read, numbered among the run's
        updates, as the check in the update would have. Nothing to read with cuda_graphs off."""
        err = self.agent.pop_fault()
        if err is not None:
            err.update += self.checked_updates
            raise err
        self.checked_updates = self.updates

    def check_finite(self, stats: dict) -> None:
        """End of an epoch's updates: log the tasks the updates dropped (`skipped_tasks` in the
        train log), then check the statistics and every parameter and buffer, so that no checkpoint
        with a NaN/Inf is ever written. Each update checks its own losses, gradients and parameters
        (MultiTaskSAC.update; with cuda_graphs on, on the device, read by check_deferred_faults at the
        end of the updates); a failure raises NonFiniteError, reported by `nonfinite_message`."""
        bad = [k for k, v in stats.items() if isinstance(v, float) and not np.isfinite(v)]
        skipped = self.agent.pop_skipped()
        stats["skipped_tasks"] = {t: {"nonfinite": n, "over_threshold": m} for t, n, m in
                                  zip(self.tasks, skipped["nonfinite"], skipped["over_threshold"]) if n or m}
        for t, n in zip(self.tasks, skipped["nonfinite"]):
            if n:
                print(f"warning: {self.prefix}epoch {self.epoch + 1}: task {t!r} dropped from {n} of "
                      f"{self.budget.updates_per_epoch} updates: non-finite loss or sampled transitions "
                      f"(logged as skipped_tasks in {self.train_log.path.name})", file=sys.stderr)
        if bad:
            raise NonFiniteError("statistic", ", ".join(bad), during_update=False)
        for name, value in self.agent.state_dict().items():
            if value.is_floating_point() and not torch.isfinite(value).all():
                raise NonFiniteError("parameter", name.split(".")[0], detail=name, during_update=False)

    def nonfinite_message(self, err: NonFiniteError) -> str:
        """Where and what: "update 37 (epoch 5): non-finite gradient in q1 from task 'reach'; ..."."""
        number = self.updates + 1 if err.update is None else err.update  # found later: its own number
        where = (f"update {number} (epoch {self.epoch + 1})" if err.during_update
                 else f"epoch {self.epoch + 1} (after update {self.updates})")
        return (f"{where}: {err.describe(self.tasks)}; training stopped before saving anything from "
                f"this epoch: {self.last_checkpoint_note()}")

    def last_checkpoint_note(self) -> str:
        kept = [p for p in checkpoint_files(self.checkpoint_dir) if p.with_suffix(".json").exists()]
        return f"the last good checkpoint {kept[-1]} is intact" if kept else "no checkpoint had been written yet"

    def periodic_evaluation(self, env_steps: int) -> dict:
        result = evaluate_agent(self.agent, self.eval_envs, self.tasks, self.budget.eval_episodes)
        record = {"epoch": self.epoch, "env_steps": env_steps, "success": result["success"],
                  "return": result["return"], "mean_success": result["mean_success"]}
        if result["routed"]:
            record["depth"] = {t: r["depth_mean"] for t, r in result["routes"].items()}
            record["modules_used"] = {t: r["modules_used_mean"] for t, r in result["routes"].items()}
        self.eval_log.append(record)
        self.live.evaluation(record)
        return record

    def train(self) -> None:
        """The run from its newest checkpoint to `epochs`; raises Stopped after a signal."""
        units, outcome = self.units(), None
        while True:
            try:
                request = resume_units(units, outcome)
            except StopIteration:
                return
            outcome = None if request is None else fulfil(self.agent, request)

    def units(self) -> Generator[Request | None, Any, None]:
        """The run from its newest checkpoint to `epochs`, as a generator of its units of work. It
        yields None after an epoch's episode (collection in sequence) and after each epoch's end
        (evaluation, logs, checkpoint), and a request before each update (the Batch to update on)
        and each episode (a Collection, now or in the background): whoever runs the units does what
        it asks and sends back the outcome (`fulfil`: what `train` does; a group of seeds,
        d2r.sac.group, runs its seeds' units in turn, each between its own random streams, and may
        do their requests together: d2r.sac.stacked, d2r.sac.collect.collect_together).
        Raises Stopped after a signal, NonFiniteError on a NaN/Inf."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if self.resume():
            print(f"{self.prefix}resuming from epoch {self.epoch} ({self.updates} updates done)", file=sys.stderr)
        else:  # a fresh run: no log lines of an earlier one survive
            self.train_log.restore([])
            self.eval_log.restore([])
        self.checked_updates = self.updates
        self.live.restart(self.train_log.records, self.eval_log.records)
        self._last_success = float("nan")
        bar = tqdm(range(self.epoch, self.budget.epochs), initial=self.epoch, total=self.budget.epochs,
                   disable=not self.progress, desc=f"{self.exp.name}/{self.run.method.name}/seed{self.run.seed}",
                   unit="epoch", file=sys.stderr, position=self.bar_position)
        for epoch in bar:
            self.epoch = epoch
            progress, self.partial = self.partial or EpochProgress(), None
            if progress.skipped is not None:
                self.agent.skipped.copy_(progress.skipped)
            self._epoch_start = time.perf_counter() - progress.elapsed
            stats = yield from self.collect_and_update(epoch, progress)
            self.end_epoch(epoch, progress, stats, bar)
            yield
        self.finish()

    def end_epoch(self, epoch: int, progress: EpochProgress, stats: dict, bar) -> None:
        """After the epoch's updates: checks, evaluation (every `eval_every`), the log line, and a
        checkpoint (every `checkpoint_every`, and when a signal came: then raises Stopped)."""
        budget, steps = self.budget, self.run.env.max_episode_steps
        if stats:
            self.check_finite(stats)
        env_steps = (epoch + 1) * steps
        self.epoch = epoch + 1
        if self.epoch % budget.eval_every == 0 or self.epoch == budget.epochs:
            self._last_success = self.periodic_evaluation(env_steps)["mean_success"]
        elapsed = time.perf_counter() - self._epoch_start
        self.wall_time += elapsed
        self.train_log.append({
            "epoch": self.epoch, "env_steps": env_steps, "updates": self.updates,
            "wall_time": round(self.wall_time, 3), "sps": round(steps * len(self.tasks) / elapsed, 1),
            **stats,
            "alpha": {t: round(a, 6) for t, a in zip(self.tasks, self.agent.log_alpha.exp().tolist())},
            "temperature": {t: round(a, 6) for t, a in zip(self.tasks, self.agent.temperature.tolist())},
            "train_success": dict(zip(self.tasks, progress.success)),
        })
        self.live.epoch(self.train_log.records[-1])
        postfix = {"sps": f"{steps * len(self.tasks) / elapsed:.0f}", "success": f"{self._last_success:.2f}"}
        if "loss_q" in stats:  # none before the first update
            postfix["loss_q"] = stats["loss_q"]
        bar.set_postfix(postfix)
        stopping = self.stop_requested and self.epoch < budget.epochs
        if self.epoch % budget.checkpoint_every == 0 or self.epoch == budget.epochs or stopping:
            path = self.save()
        if stopping:  # (a signal in the last epoch lets the run finish instead)
            raise Stopped(self.stop.signal, self.epoch, EpochProgress(), path)

    def finish(self) -> None:
        save_model(self.run_files.model, self.agent.state_dict())
        atomic_write_json(self.run_files.run_info, {
            "config": self.run.training_dict(),
            "param_counts": {"policy": parameter_count(self.agent.policy), "q": parameter_count(self.agent.q1)},
            "epochs": self.epoch,
            "env_steps_per_task": self.epoch * self.run.env.max_episode_steps,
            "updates": self.updates,
            "wall_time": round(self.wall_time, 3),
            "code": code_version(),
            **({"group": self.group} if self.group else {}),
        })
        self.close()

    def close(self) -> None:
        self.live.close()
        self.envs.close()
        self.eval_envs.close()


@dataclass(frozen=True)
class Collection:
    """A unit's request (Trainer.units): one episode of the run's collector, now (Collector.run) or
    in the background (`background`: Collector.start; the run joins it)."""

    collector: Collector
    background: bool = False


#: what a run's units ask for: an update of a Batch, or a Collection
Request = Batch | Collection


def fulfil(agent, request: Request) -> dict | Episode | BaseException:
    """What `request` asks, done: the update's statistics or the episode; or the error it raised
    (to hand to `resume_units`)."""
    try:
        if isinstance(request, Collection):
            return request.collector.start() if request.background else request.collector.run()
        return agent.update(request)
    except BaseException as err:  # raised again inside the run by resume_units
        return err


def resume_units(units: Generator, outcome: dict | Episode | BaseException | None) -> Request | None:
    """The run's next unit, given what its last request came to: the update's statistics or the
    episode are sent back; an error is raised inside the run (which cleans up: an overlapped
    episode is joined) and from there out."""
    if isinstance(outcome, BaseException):
        return units.throw(outcome)
    return units.send(outcome)
