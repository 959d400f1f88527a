"""One training run, or one pack of K runs: data -> steps -> evaluation -> checkpoints.

``train(cfg, report=...)`` trains one model; ``train_pack(members, report=...)`` trains
K members of one cell at once, with batched weights (``study.model``).  A single run is
a pack of one.  Plain PyTorch, no Ray in sight.

A pack shares the task and model configs and the step budget; its members differ in
``train.seed`` (their own task data, data generator and initial weights) and may differ
in ``train.lr``, ``train.weight_decay`` and ``train.warmup_steps`` (per-member tensors).
Each member is what it would be alone: the batches it draws are the batches it would
draw alone, its gradient is its own loss's, clipping and AdamW act per member, and its
dropout masks come from its own generator (seeded from its seed, see
:func:`dropout_generator`), so it matches its solo run within float rounding, with
dropout or without.

Every ``eval_every`` steps (and at the end) the running members are evaluated: on a GPU
all in one batched evaluation (the task's ``evaluate_pack``: one greedy decode or
in-context forward for all of them), on a CPU member by member (there batching saves no
kernel launches and the pack's decode pays for rows its settled members no longer need:
measured 0.61x at K = 16 nano); the representations member by member.  Then the
``report`` callback receives a :class:`PackReport`: one :class:`Report` per member
with news (its metrics and rows for the store tables, its status) and, every
``checkpoint_every`` steps, the full training state of the pack.  Restoring that state
(``restore=state``) continues bit for bit: the members' data and dropout generators,
the optimizer moments, the loss window and the step counter are all in it, and
the learning rate is a pure function of the step.

A member whose loss goes non-finite is frozen (its updates are masked) and reported
``diverged`` while the others go on; with ``train.stop_when`` a member whose score holds
is frozen and reported ``converged``.  The run ends when every member has stopped or the
step budget is spent.  The loss is checked on the device; the host reads it only at
log and evaluation steps, so a GPU never waits for the host within a logging window.
"""

from __future__ import annotations

import math
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from study.config import PACK_MEMBER_FIELDS, TASK_POSITION_SCHEMES, TrainConfig, TrialConfig
from study.errors import ConfigError
from study.model import Transformer
from study.tasks import build_task
from study.tasks.base import Batch
from study.naming import summary_metric


def pick_device(name: str = "auto") -> torch.device:
    """cuda, then mps, then cpu for ``auto``; the named device otherwise."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device=cuda but no CUDA device is visible; use train.device=auto or cpu")
    return torch.device(name)


def uses_bf16(cfg: TrainConfig, device: torch.device) -> bool:
    return cfg.precision == "bf16" or (cfg.precision == "auto" and device.type == "cuda")


def lr_schedule(step: int, peak: torch.Tensor, warmup: torch.Tensor, cfg: TrainConfig) -> torch.Tensor:
    """Learning rate for optimizer step ``step`` (0-based) of every member at once: linear warmup to
    its peak, then constant or cosine down to ``min_lr_ratio`` x peak; peak lr and warmup steps are
    [K] tensors -> lr [K]."""
    warming = peak * (step + 1) / warmup.clamp(min=1)
    if cfg.schedule == "constant":
        after = peak
    else:
        progress = ((step - warmup) / (cfg.steps - warmup).clamp(min=1)).clamp(max=1.0)
        floor = peak * cfg.min_lr_ratio
        after = floor + 0.5 * (peak - floor) * (1.0 + torch.cos(math.pi * progress))
    return torch.where(step < warmup, warming, after)


def summarize(eval_rows: list[dict[str, Any]]) -> dict[str, float]:
    """Mean of each metric over the conditions of each split: ``{"id_exact_match": 1.0, ...}``."""
    sums: dict[str, list[float]] = {}
    for row in eval_rows:
        value = row["value"]
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        sums.setdefault(summary_metric(row["split"], row["metric"]), []).append(float(value))
    return {name: sum(values) / len(values) for name, values in sorted(sums.items())}


def per_member(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """values [K] shaped [K, 1, ..., 1] to broadcast against a pack tensor ``like`` [K, ...]."""
    return values.view(-1, *([1] * (like.dim() - 1)))


def grad_of(p: torch.nn.Parameter) -> torch.Tensor:
    """A pack parameter's gradient after the backward pass (every parameter takes part in the loss)."""
    if p.grad is None:
        raise RuntimeError(f"a parameter of shape {tuple(p.shape)} has no gradient: it took no part in the loss")
    return p.grad


class PackAdamW:
    """AdamW (Loshchilov & Hutter, 2019) over pack parameters [K, ...].

    The update of ``torch.optim.AdamW`` (eps 1e-8, bias-corrected moments, decoupled
    decay), with the learning rate and the weight decay given per member as [K] tensors
    at every step; weight decay applies only to the parameters flagged in ``decays``
    (matrices, not biases, gains or position tables).  A member with lr 0 does not move.
    """

    def __init__(
        self, params: list[torch.nn.Parameter], decays: list[bool], betas: tuple[float, float], eps: float = 1e-8
    ):
        self.params, self.decays, self.betas, self.eps = params, decays, betas, eps
        self.steps = 0
        self.exp_avg = [torch.zeros_like(p) for p in params]  # first moments, like each parameter
        self.exp_avg_sq = [torch.zeros_like(p) for p in params]  # second moments

    @torch.no_grad()
    def step(self, lr: torch.Tensor, weight_decay: torch.Tensor) -> None:
        self.steps += 1
        beta1, beta2 = self.betas
        bias_correction1 = 1.0 - beta1**self.steps
        bias_correction2_sqrt = math.sqrt(1.0 - beta2**self.steps)
        for p, decays, m, v in zip(self.params, self.decays, self.exp_avg, self.exp_avg_sq):
            lr_p = per_member(lr, p)
            if decays:
                p.mul_(1.0 - lr_p * per_member(weight_decay, p))
            grad = grad_of(p)
            m.lerp_(grad, 1.0 - beta1)
            v.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
            denom = (v.sqrt() / bias_correction2_sqrt).add_(self.eps)
            p.sub_(lr_p / bias_correction1 * m / denom)

    def state_dict(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "exp_avg": [t.detach().cpu().clone() for t in self.exp_avg],
            "exp_avg_sq": [t.detach().cpu().clone() for t in self.exp_avg_sq],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.steps = state["steps"]
        for mine, saved in zip(self.exp_avg + self.exp_avg_sq, state["exp_avg"] + state["exp_avg_sq"]):
            mine.copy_(saved)


def make_optimizer(model: Transformer, cfg: TrainConfig) -> PackAdamW:
    """AdamW with weight decay on matrices only (not on biases, norms or position tables)."""
    named = list(model.named_parameters())
    decays = [n.endswith("weight") and p.dim() == 3 for n, p in named]
    return PackAdamW([p for _, p in named], decays, betas=cfg.betas)


@torch.no_grad()
def clip_and_mask(params: list[torch.nn.Parameter], active: torch.Tensor, max_norm: float | None) -> torch.Tensor:
    """Per member: clip the gradient to ``max_norm`` (as ``clip_grad_norm_`` does for one
    model) and zero it for inactive members.  Returns each member's norm before clipping [K]."""
    norms = torch.stack([grad_of(p).float().flatten(1).pow(2).sum(1) for p in params]).sum(0).sqrt()  # [K]
    scale = torch.ones_like(norms) if max_norm is None else (max_norm / (norms + 1e-6)).clamp(max=1.0)
    for p in params:
        grad = grad_of(p)
        p.grad = torch.where(per_member(active, grad), grad * per_member(scale, grad).to(grad.dtype), 0.0)
    return norms


def stack_inputs(batches: list[Batch]) -> torch.Tensor:
    """The members' inputs as one [K, B, T(, n_in)] tensor, right-padded to the longest T.

    Padding sits after every real position, so the causal model's outputs at the real
    positions do not see it; the loss reads only those (see :func:`member_losses`).
    """
    T = max(b.inputs.shape[1] for b in batches)
    padded = []
    for b in batches:
        missing = T - b.inputs.shape[1]
        pad = (0, missing) if b.inputs.dim() == 2 else (0, 0, 0, missing)
        padded.append(F.pad(b.inputs, pad) if missing else b.inputs)
    return torch.stack(padded)


def stack_positions(batches: list[Batch]) -> torch.Tensor | None:
    """The members' position ids as one [K, B, T] tensor, right-padded with id 0 like
    :func:`stack_inputs`; None when the task computes none."""
    ids = [b.positions for b in batches if b.positions is not None]
    if len(ids) < len(batches):  # the members share one task, so: none of them has ids
        return None
    T = max(i.shape[1] for i in ids)
    return torch.stack([F.pad(i, (0, T - i.shape[1])) for i in ids])


def member_losses(tasks: list[Any], output: torch.Tensor, batches: list[Batch]) -> torch.Tensor:
    """Each member's task loss on its own batch: [K]."""
    return torch.stack(
        [
            task.loss(output[k, :, : batch.inputs.shape[1]].float(), batch)
            for k, (task, batch) in enumerate(zip(tasks, batches))
        ]
    )


def check_pack(members: list[TrialConfig]) -> None:
    """Refuse a pack whose members differ in anything but PACK_MEMBER_FIELDS, naming the field."""
    if not members:
        raise ConfigError("a pack needs at least one member")
    first = members[0].flat()
    for other in members[1:]:
        for key, value in other.flat().items():
            shared = not (key.startswith("train.") and key.removeprefix("train.") in PACK_MEMBER_FIELDS)
            if shared and first.get(key) != value:
                raise ConfigError(
                    f"pack members differ in {key} ({first.get(key)!r} vs {value!r}); members of a pack share "
                    f"everything but train.{', train.'.join(PACK_MEMBER_FIELDS)}: put the others in separate packs"
                )


DROPOUT_STREAM = 2**40  # a member's dropout generator is seeded with its seed + this (its data generator: the seed)


def dropout_generator(seed: int, device: torch.device) -> torch.Generator:
    """The generator a member of seed ``seed`` draws its dropout masks from, alone or in any pack."""
    return torch.Generator(device=device).manual_seed(seed + DROPOUT_STREAM)


def pack_members(cfg: TrialConfig) -> list[TrialConfig]:
    """The ``pack.size`` members of a trial config: seeds train.seed, train.seed + 1, ..."""
    return [
        cfg.model_copy(update={"train": cfg.train.model_copy(update={"seed": cfg.train.seed + k})})
        for k in range(cfg.pack.size)
    ]


@dataclass
class Report:
    """What one member tells the outside world at one evaluation (or when it stops)."""

    step: int
    metrics: dict[str, float]  # summary: loss, id_exact_match, ood_nmse, ...
    rows: dict[str, list[dict[str, Any]]]  # store table -> rows (trials row excluded)
    state: dict[str, Any] | None = None  # full training state when this is a checkpoint (train() only)
    status: str = "running"  # running | completed | diverged | converged
    n_params: int = 0
    device: str = ""
    trial_id: str = ""

    @property
    def done(self) -> bool:
        """The member's last report."""
        return self.status != "running"


@dataclass
class PackReport:
    """What a pack tells the outside world at one evaluation step."""

    step: int
    members: list[Report]  # one per member with news at this step, in member order
    state: dict[str, Any] | None = None  # the whole pack's training state at checkpoints


@dataclass
class TrialResult:
    status: str
    steps: int
    metrics: dict[str, float]
    eval_rows: list[dict[str, Any]]
    n_params: int
    device: str
    node: str = field(default_factory=platform.node)
    seconds: float = 0.0
    trial_id: str = ""


@dataclass
class TrainState:
    """Everything a pack's training loop changes besides the weights and the optimizer.

    Host-side: the step, each member's status, the step it stopped at, its last summary
    metrics and its run of evaluations meeting ``train.stop_when``; the members' data
    data generators and dropout generators.  Device-side [K] tensors (read by the host only at log and evaluation
    steps): which members still train, the step at which a member's loss went
    non-finite (-1: never), and the logging window (loss sums since the last log, and
    the last logged mean) so that a restored run logs exactly what an uninterrupted one does.
    """

    step: int
    generators: list[torch.Generator]
    dropout_generators: list[torch.Generator]
    status: list[str]
    stopped_at: list[int | None]
    metrics: list[dict[str, float]]
    good_evals: list[int]
    active: torch.Tensor  # bool [K]
    diverged_at: torch.Tensor  # long [K]
    window_loss: torch.Tensor  # float [K]
    window_n: int
    recent_loss: torch.Tensor  # float [K]

    @classmethod
    def fresh(cls, members: list[TrialConfig], device: torch.device) -> "TrainState":
        K = len(members)
        return cls(
            step=0,
            generators=[torch.Generator(device=device).manual_seed(m.train.seed) for m in members],
            dropout_generators=[dropout_generator(m.train.seed, device) for m in members],
            status=["running"] * K,
            stopped_at=[None] * K,
            metrics=[{} for _ in range(K)],
            good_evals=[0] * K,
            active=torch.ones(K, dtype=torch.bool, device=device),
            diverged_at=torch.full((K,), -1, dtype=torch.long, device=device),
            window_loss=torch.zeros(K, device=device),
            window_n=0,
            recent_loss=torch.full((K,), float("nan"), device=device),
        )

    def last_step(self, k: int) -> int:
        """Member k's last step: where it stopped, or the pack's step while it runs."""
        stopped = self.stopped_at[k]
        return stopped if stopped is not None else self.step

    def running(self) -> list[int]:
        return [k for k, s in enumerate(self.status) if s == "running"]

    def to_checkpoint(
        self, model: Transformer, optimizer: PackAdamW, members: list[TrialConfig], device: torch.device
    ) -> dict[str, Any]:
        return {
            "step": self.step,
            "model": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
            "optimizer": optimizer.state_dict(),
            "generators": [g.get_state().cpu() for g in self.generators],
            "dropout_generators": [g.get_state().cpu() for g in self.dropout_generators],
            "cpu_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
            "status": list(self.status),
            "stopped_at": list(self.stopped_at),
            "metrics": [dict(m) for m in self.metrics],
            "good_evals": list(self.good_evals),
            "active": self.active.cpu().clone(),
            "diverged_at": self.diverged_at.cpu().clone(),
            "window_loss": self.window_loss.cpu().clone(),
            "window_n": self.window_n,
            "recent_loss": self.recent_loss.cpu().clone(),
            "configs": [m.to_dict() for m in members],
        }

    @classmethod
    def from_checkpoint(
        cls,
        state: dict[str, Any],
        model: Transformer,
        optimizer: PackAdamW,
        members: list[TrialConfig],
        device: torch.device,
    ) -> "TrainState":
        if len(state["generators"]) != len(members):
            raise ConfigError(
                f"the checkpoint holds a pack of {len(state['generators'])} members, "
                f"not {len(members)}; restore it with the same pack"
            )
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        generators = [torch.Generator(device=device) for _ in members]
        for g, saved in zip(generators, state["generators"]):
            g.set_state(saved)
        dropout_generators = [dropout_generator(m.train.seed, device) for m in members]
        for g, saved in zip(dropout_generators, state.get("dropout_generators", [])):  # older checkpoints: fresh
            g.set_state(saved)
        torch.set_rng_state(state["cpu_rng"])
        if device.type == "cuda" and state.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(state["cuda_rng"], device)
        return cls(
            step=state["step"],
            generators=generators,
            dropout_generators=dropout_generators,
            status=list(state["status"]),
            stopped_at=list(state["stopped_at"]),
            metrics=[dict(m) for m in state["metrics"]],
            good_evals=list(state["good_evals"]),
            active=state["active"].to(device),
            diverged_at=state["diverged_at"].to(device),
            window_loss=state["window_loss"].to(device),
            window_n=state["window_n"],
            recent_loss=state["recent_loss"].to(device),
        )


def train(
    cfg: TrialConfig,
    trial_id: str = "local",
    *,
    restore: dict[str, Any] | None = None,
    report: Callable[[Report], None] | None = None,
    progress: Callable[[int, dict[str, float]], None] | None = None,
) -> TrialResult:
    """Train one model on one task (a pack of one); see the module docstring for the contract."""

    results = train_pack(
        [cfg], [trial_id], restore=restore, report=member_reports(report) if report else None, progress=progress
    )
    return results[0]


def member_reports(report: Callable[[Report], None]) -> Callable[[PackReport], None]:
    """A pack's report handed on as one report per member; a member still running (or
    just completed) carries the pack's checkpoint."""

    def report_one(pack: PackReport) -> None:
        for member in pack.members:
            member.state = pack.state if member.status in ("running", "completed") else None
            report(member)

    return report_one


def train_pack(
    members: list[TrialConfig],
    trial_ids: list[str] | None = None,
    *,
    restore: dict[str, Any] | None = None,
    report: Callable[[PackReport], None] | None = None,
    progress: Callable[[int, dict[str, float]], None] | None = None,
) -> list[TrialResult]:
    """Train K members of one cell at once; see the module docstring for the contract."""
    check_pack(members)
    K, tc = len(members), members[0].train
    trial_ids = trial_ids or [f"local-{k}" for k in range(K)]
    device = pick_device(tc.device)
    bf16 = uses_bf16(tc, device)
    torch.manual_seed(members[0].train.seed)  # the global RNG, should anything draw from it
    mc = members[0].model
    scheme = mc.pos_encoding if mc.pos_encoding in TASK_POSITION_SCHEMES else None  # ids the tasks compute
    tasks = [
        build_task(m.task, seed=m.train.seed, device=device, position_scheme=scheme, max_position=mc.max_position)
        for m in members
    ]
    model = Transformer(members[0].model, tasks[0].io, n_members=K, seeds=[m.train.seed for m in members]).to(device)
    n_params, device_name = model.n_params(), str(device)
    params = list(model.parameters())
    optimizer = make_optimizer(model, tc)
    peak_lr = torch.tensor([m.train.lr for m in members], device=device)
    warmup = torch.tensor([m.train.warmup_steps for m in members], device=device)
    weight_decay = torch.tensor([m.train.weight_decay for m in members], device=device)
    if restore is not None:
        state = TrainState.from_checkpoint(restore, model, optimizer, members, device)
    else:
        state = TrainState.fresh(members, device)
    model.dropout_generators[:] = state.dropout_generators  # member k drops from its own stream
    checkpoint_every = tc.checkpoint_every or tc.eval_every
    curve_rows: list[list[dict[str, Any]]] = [[] for _ in range(K)]  # since each member's last report
    eval_rows: list[list[dict[str, Any]]] = [[] for _ in range(K)]  # each member's last evaluation

    def autocast():
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16)

    def evaluate(running: list[int], step: int) -> tuple[list[list[dict[str, Any]]], list[list[dict[str, Any]]]]:
        """Evaluation rows and representation rows of the running members: the evaluation in
        batched forwards over all of them on a GPU (``evaluate_pack``), member by member on a
        CPU (equal rows, see the module docstring); the representations member by member."""
        # evaluation must not consume the training RNG streams
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), torch.no_grad(), autocast():
            if device.type == "cuda":
                pack = model if running == list(range(K)) else model.members(running)
                evals = type(tasks[0]).evaluate_pack([tasks[k] for k in running], pack)
            else:
                evals = [tasks[k].evaluate(model.member(k)) for k in running]
            return evals, [tasks[k].representations(model.member(k), step) for k in running]

    def member_report(k: int, rows: dict[str, list[dict[str, Any]]], step: int) -> Report:
        return Report(
            step=step,
            metrics=state.metrics[k],
            rows=rows,
            status=state.status[k],
            n_params=n_params,
            device=device_name,
            trial_id=trial_ids[k],
        )

    def stop_diverged(news: dict[int, Report]) -> None:
        """Record the members the device froze since the last look (one host read)."""
        diverged_at = state.diverged_at.tolist()
        for k in state.running():
            if diverged_at[k] >= 0:
                state.status[k], state.stopped_at[k] = "diverged", diverged_at[k]
                state.metrics[k] = {"loss": float("nan")}
                curve_rows[k].append(
                    {"trial_id": trial_ids[k], "step": diverged_at[k], "metric": "loss", "value": float("nan")}
                )
                news[k] = member_report(k, {"curves": curve_rows[k]}, diverged_at[k])
                curve_rows[k] = []

    started = window_t = time.perf_counter()
    grad_norm = torch.zeros(K, device=device)
    lr = lr_schedule(state.step, peak_lr, warmup, tc)
    model.train()
    while state.step < tc.steps and state.running():
        lr = lr_schedule(state.step, peak_lr, warmup, tc)
        batches = [task.train_batch(tc.batch_size, state.step, g) for task, g in zip(tasks, state.generators)]
        with autocast():
            output = model(stack_inputs(batches), positions=stack_positions(batches))  # [K, B, T, n_out]
        losses = member_losses(tasks, output, batches)  # [K]
        newly_diverged = state.active & ~torch.isfinite(losses)
        state.diverged_at = torch.where(newly_diverged, state.step, state.diverged_at)
        state.active = state.active & ~newly_diverged
        for p in params:
            p.grad = None
        torch.where(state.active, losses, 0.0).sum().backward()  # member k's gradient is its own loss's
        grad_norm = clip_and_mask(params, state.active, tc.grad_clip)
        optimizer.step(lr * state.active, weight_decay)
        state.step += 1
        state.window_loss = state.window_loss + torch.where(state.active, losses.detach(), 0.0)
        state.window_n += 1
        step = state.step
        log_now, eval_now = step % tc.log_every == 0 or step == tc.steps, step % tc.eval_every == 0 or step == tc.steps
        if not (log_now or eval_now):
            continue
        news: dict[int, Report] = {}  # member -> its report at this step
        stop_diverged(news)
        if log_now:
            elapsed = time.perf_counter() - window_t
            state.recent_loss = state.window_loss / state.window_n
            recent, lrs, norms = torch.stack([state.recent_loss, lr.float(), grad_norm.float()]).tolist()
            for k in state.running():
                for name, value in (
                    ("loss", recent[k]),
                    ("lr", lrs[k]),
                    ("grad_norm", norms[k]),
                    ("examples_per_s", state.window_n * tc.batch_size / max(elapsed, 1e-9)),
                ):
                    curve_rows[k].append({"trial_id": trial_ids[k], "step": step, "metric": name, "value": value})
            if progress is not None and state.running():
                progress(step, {trial_ids[k]: recent[k] for k in state.running()})
            state.window_loss, state.window_n, window_t = torch.zeros_like(state.window_loss), 0, time.perf_counter()
        if eval_now:
            recent = state.recent_loss.tolist()
            model.eval()
            running = state.running()
            for k, evals, reps in zip(running, *evaluate(running, step)):
                for row in evals + reps:
                    row["trial_id"], row["step"] = trial_ids[k], step
                eval_rows[k] = evals
                state.metrics[k] = {"loss": recent[k], **summarize(evals)}
                stop = members[k].train.stop_when
                state.good_evals[k] = state.good_evals[k] + 1 if stop is not None and stop.met(state.metrics[k]) else 0
                if stop is not None and state.good_evals[k] >= stop.for_evals:
                    state.status[k], state.stopped_at[k] = "converged", step
                elif step == tc.steps:
                    state.status[k], state.stopped_at[k] = "completed", step
                news[k] = member_report(k, {"evals": evals, "curves": curve_rows[k], "representations": reps}, step)
                curve_rows[k] = []
            model.train()
            stopped = torch.tensor([s != "running" for s in state.status], device=device)
            state.active = state.active & ~stopped
        if report is not None and news:
            is_checkpoint = eval_now and (step % checkpoint_every == 0 or step == tc.steps)
            state_dict = state.to_checkpoint(model, optimizer, members, device) if is_checkpoint else None
            report(PackReport(step=step, members=[news[k] for k in sorted(news)], state=state_dict))
    seconds = time.perf_counter() - started
    return [
        TrialResult(
            status=state.status[k],
            steps=state.last_step(k),
            metrics=state.metrics[k],
            eval_rows=eval_rows[k],
            n_params=n_params,
            device=device_name,
            seconds=seconds,
            trial_id=trial_ids[k],
        )
        for k in range(K)
    ]


def save_state(state: dict[str, Any], path: str) -> None:
    torch.save(state, path)


def load_state(path: str) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=False)
