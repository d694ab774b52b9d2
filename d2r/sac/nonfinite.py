"""NaN/Inf checks of the agent's updates, and the error that names what went non-finite.

Each update is checked twice: before its optimiser steps (the clipped gradient norms and the
loss) and after them (the parameters). A failed check names ONE fault, the first in this order
(`UpdateChecks._candidates`):
  1. a non-finite parameter (of any network, targets included): the cause of all the rest;
  2. a non-finite loss of the tasks the update kept;
  3. a non-finite gradient norm, with the tasks whose own loss term was not finite;
  4. else the value checked (the loss or gradient group, or "update" after the steps).

The same checks run in two ways (`deferred`):
- immediate (cuda_graphs off): one host read per check; a failure raises NonFiniteError at once,
  before the optimisers step on it;
- deferred (cuda_graphs on): no host read inside the update (a CUDA graph cannot read back): the
  first failure since the last `pop` is recorded on the device (its update's number and which
  fault), and `pop`, one host read per epoch, returns it as the error the immediate check raises.
"""

from __future__ import annotations

import torch


class NonFiniteError(FloatingPointError):
    """A NaN or Inf found in an update: the quantity, the network and, where known, the tasks (indices)."""

    def __init__(self, quantity: str, network: str, tasks=(), detail: str = "", during_update: bool = True,
                 update: int | None = None):
        self.quantity, self.network, self.tasks, self.detail = quantity, network, tuple(tasks), detail
        self.during_update = during_update
        #: found after the fact (deferred checks): the failing update's number, counted from the
        #: first update after the record was last read (UpdateChecks.pop)
        self.update = update
        super().__init__(self.describe())

    def describe(self, task_names=None) -> str:
        text = f"non-finite {self.quantity} in {self.network}"
        if self.detail:
            text += f" ({self.detail})"
        if self.tasks:
            names = ", ".join(repr(task_names[t]) if task_names else str(t) for t in self.tasks)
            text += f" from task{'s' if len(self.tasks) > 1 else ''} {names}"
        return text


def _all_finite(values) -> bool:
    """One fused check of 0-dim norms and losses: a single host synchronisation."""
    return bool(torch.isfinite(torch.stack(values)).all())


class UpdateChecks:
    """The checks of one agent's updates.

    params: {network: [(parameter name, tensor), ...]}, every parameter a fault may name, in order;
    trained: the tensors the optimisers step (the immediate check after the steps reads their norms).
    """

    def __init__(self, params: dict[str, list[tuple[str, torch.Tensor]]], trained: list[torch.Tensor],
                 num_tasks: int, device: torch.device, deferred: bool):
        self.params = [(network, name, p) for network, named in params.items() for name, p in named]
        self.trained, self.deferred = trained, deferred
        self._no_tasks = torch.zeros(num_tasks, dtype=torch.bool, device=device)
        # Deferred: updates since the last pop, and the first fault among them: [its update
        # (1-based, 0 = none), its check site, its index among that site's candidates], its tasks.
        self._count = torch.zeros((), dtype=torch.long, device=device)
        self._record = torch.zeros(3, dtype=torch.long, device=device)
        self._tasks = torch.zeros(num_tasks, dtype=torch.bool, device=device)
        self._sites: dict[tuple, int] = {}  # a check site's candidates -> its number

    def begin_update(self) -> None:
        if self.deferred:
            self._count += 1

    def before_step(self, norms: dict[str, torch.Tensor], terms: dict[str, torch.Tensor], loss: torch.Tensor,
                    keep: torch.Tensor) -> None:
        """norms: clipped gradient norms by group; terms: [T] per-task losses under the group they
        train; loss: the masked mean; keep: [T] the tasks it kept."""
        terms = {name: value.detach() for name, value in terms.items()}
        if self.deferred:
            failed = ~torch.isfinite(torch.stack([*norms.values(), loss.detach()])).all()
            self._note(failed, *self._candidates(norms, terms, keep))
        elif not _all_finite([*norms.values(), loss.detach()]):
            raise self._first(*self._candidates(norms, terms, keep))

    def after_step(self) -> None:
        if self.deferred:
            faults, flags, tasks = self._candidates({}, {}, None)
            self._note(flags[:len(self.params)].any(), faults, flags, tasks)
        elif not _all_finite(torch._foreach_norm(self.trained)):  # one fused norm per tensor, one sync
            raise self._first(*self._candidates({}, {}, None))

    def _candidates(self, norms, terms, keep):
        """The faults a check can name, in the order of the module docstring: [(quantity, network,
        detail)], a flag per fault (True: non-finite; on the device) and per fault the tasks it names."""
        # p * 0 is NaN exactly where p is NaN or Inf, and so is its norm (a norm of p could overflow)
        zeros = torch._foreach_mul([p.detach() for *_, p in self.params], 0.0)
        faults = [("parameter", network, name) for network, name, _ in self.params]
        flags = [~torch.isfinite(torch.stack(torch._foreach_norm(zeros)))]
        tasks = [self._no_tasks.expand(len(self.params), -1)]
        for name, per_task in terms.items():
            faults.append(("loss", name, ""))
            flags.append(~torch.isfinite(torch.where(keep, per_task, 0.0)).all().view(1))
            tasks.append(self._no_tasks.view(1, -1))
        for name, norm in norms.items():
            faults.append(("gradient", name, ""))
            flags.append(~torch.isfinite(norm).view(1))
            tasks.append((~torch.isfinite(terms[name]) if name in terms else self._no_tasks).view(1, -1))
        faults.append(("value", "/".join(norms) or "update", ""))  # whatever else failed the check
        flags.append(torch.ones(1, dtype=torch.bool, device=self._no_tasks.device))
        tasks.append(self._no_tasks.view(1, -1))
        return faults, torch.cat(flags), torch.cat(tasks)

    @staticmethod
    def _error(fault: tuple, tasks: list[int], update: int | None = None) -> NonFiniteError:
        quantity, network, detail = fault
        return NonFiniteError(quantity, network, tasks if quantity == "gradient" else (), detail, update=update)

    def _first(self, faults, flags, tasks) -> NonFiniteError:
        which = flags.tolist().index(True)  # host reads: only after a failed check
        return self._error(faults[which], torch.nonzero(tasks[which]).flatten().tolist())

    def _note(self, failed, faults, flags, tasks) -> None:
        """Record on the device the first fault since the last pop, if this check failed."""
        which = flags.to(torch.int32).argmax()  # the first True (argmax gives the first maximum)
        site = self._sites.setdefault(tuple(faults), len(self._sites))
        new = failed & (self._record[0] == 0)
        entry = torch.stack([self._count, torch.full_like(which, site, dtype=torch.long), which.long()])
        self._record.copy_(torch.where(new, entry, self._record))
        self._tasks.copy_(torch.where(new, tasks.index_select(0, which.view(1))[0], self._tasks))

    def pop(self) -> NonFiniteError | None:
        """The first fault recorded since the last call (one host read), with `update` its number
        among the updates since then; the record and count are cleared. None when there was none,
        and always for immediate checks (they raise at once)."""
        if not self.deferred:
            return None
        at, site, which = self._record.tolist()
        tasks = torch.nonzero(self._tasks).flatten().tolist()
        self._record.zero_()
        self._tasks.zero_()
        self._count.zero_()
        if not at:
            return None
        return self._error(list(self._sites)[site][which], tasks, update=at)
