"""One training run: data -> steps -> periodic evaluation -> checkpoints.

``train(cfg, report=...)`` is plain PyTorch with no Ray in sight.  Every
``eval_every`` steps (and at the end) it evaluates the task and hands a :class:`Report`
to the ``report`` callback: the summary metrics, the rows for the store tables, and,
every ``checkpoint_every`` steps, the full training state.  Restoring that state
(``train(cfg, restore=state)``) continues the run bit for bit: the data generator,
the dropout RNG, the optimizer and the step counter are all in it, and the learning
rate is a pure function of the step.
"""

from __future__ import annotations

import math
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from study.config import TrainConfig, TrialConfig
from study.model import Transformer
from study.tasks import build_task


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


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate for optimizer step ``step`` (0-based): linear warmup, then constant or cosine."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return cfg.lr
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    floor = cfg.lr * cfg.min_lr_ratio
    return floor + 0.5 * (cfg.lr - floor) * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def summarize(eval_rows: list[dict[str, Any]]) -> dict[str, float]:
    """Mean of each metric over the conditions of each split: ``{"id_exact_match": 1.0, ...}``."""
    sums: dict[str, list[float]] = {}
    for row in eval_rows:
        value = row["value"]
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        sums.setdefault(f"{row['split']}_{row['metric']}", []).append(float(value))
    return {name: sum(values) / len(values) for name, values in sorted(sums.items())}


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (not on biases, norms or position tables)."""
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "pos_table" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and "pos_table" not in n)]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas))


@dataclass
class Report:
    """What a trial tells the outside world at one evaluation."""

    step: int
    metrics: dict[str, float]  # summary: loss, id_exact_match, ood_nmse, ...
    rows: dict[str, list[dict[str, Any]]]  # store table -> rows (trials row excluded)
    state: dict[str, Any] | None = None  # full training state when this is a checkpoint
    status: str = "running"  # running | completed | diverged
    n_params: int = 0
    device: str = ""

    @property
    def done(self) -> bool:
        """The trial's last report."""
        return self.status != "running"


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


def train(
    cfg: TrialConfig,
    trial_id: str = "local",
    *,
    restore: dict[str, Any] | None = None,
    report: Callable[[Report], None] | None = None,
    progress: Callable[[int, float], None] | None = None,
) -> TrialResult:
    """Train one model on one task; see the module docstring for the contract."""
    tc = cfg.train
    device = pick_device(tc.device)
    bf16 = uses_bf16(tc, device)
    torch.manual_seed(tc.seed)
    task = build_task(cfg.task, seed=tc.seed, device=device)
    model = Transformer(cfg.model, task.io).to(device)
    n_params = model.n_params()
    optimizer = make_optimizer(model, tc)
    generator = torch.Generator(device=device).manual_seed(tc.seed)
    step = 0
    if restore is not None:
        model.load_state_dict(restore["model"])
        optimizer.load_state_dict(restore["optimizer"])
        generator.set_state(restore["generator"])
        torch.set_rng_state(restore["cpu_rng"])
        if device.type == "cuda" and restore.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(restore["cuda_rng"])
        step = restore["step"]
    window = restore["loss_window"] if restore is not None else (0.0, 0, float("nan"))
    checkpoint_every = tc.checkpoint_every or tc.eval_every

    def autocast():
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16)

    def evaluate() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        model.eval()
        # evaluation must not consume the training RNG streams
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), torch.no_grad(), autocast():
            eval_rows = task.evaluate(model)
            rep_rows = task.representations(model)
        model.train()
        return eval_rows, rep_rows

    def training_state() -> dict[str, Any]:
        return {
            "step": step,
            "model": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
            "optimizer": _to_cpu(optimizer.state_dict()),
            "generator": generator.get_state().cpu(),
            "cpu_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state() if device.type == "cuda" else None,
            "loss_window": (window_loss, window_n, recent_loss),
            "config": cfg.to_dict(),
        }

    curve_rows: list[dict[str, Any]] = []
    eval_rows: list[dict[str, Any]] = []
    metrics: dict[str, float] = {}
    status = "running"
    started = time.perf_counter()
    # the logging window (sum and count of losses since the last log; the last logged mean)
    # travels with checkpoints so that a restored run logs exactly what an uninterrupted one does
    window_loss, window_n, recent_loss = window
    window_t = time.perf_counter()
    model.train()
    while step < tc.steps:
        lr = lr_at(step, tc)
        for group in optimizer.param_groups:
            group["lr"] = lr
        batch = task.train_batch(tc.batch_size, step, generator)
        with autocast():
            output = model(batch.inputs)
        loss = task.loss(output.float(), batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = (
            torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
            if tc.grad_clip is not None
            else torch.sqrt(sum((p.grad.float() ** 2).sum() for p in model.parameters() if p.grad is not None))
        )
        loss_value = loss.item()
        if not math.isfinite(loss_value):
            status = "diverged"
            metrics = {"loss": loss_value}
            curve_rows.append({"trial_id": trial_id, "step": step, "metric": "loss", "value": loss_value})
            break
        optimizer.step()
        step += 1
        window_loss, window_n = window_loss + loss_value, window_n + 1
        if step % tc.log_every == 0 or step == tc.steps:
            elapsed = time.perf_counter() - window_t
            recent_loss = window_loss / window_n
            for name, value in (
                ("loss", recent_loss),
                ("lr", lr),
                ("grad_norm", float(grad_norm)),
                ("examples_per_s", window_n * tc.batch_size / max(elapsed, 1e-9)),
            ):
                curve_rows.append({"trial_id": trial_id, "step": step, "metric": name, "value": value})
            if progress is not None:
                progress(step, recent_loss)
            window_loss, window_n, window_t = 0.0, 0, time.perf_counter()
        if step % tc.eval_every == 0 or step == tc.steps:
            eval_rows, rep_rows = evaluate()
            for row in eval_rows + rep_rows:
                row["trial_id"], row["step"] = trial_id, step
            metrics = {"loss": recent_loss, **summarize(eval_rows)}
            done = step == tc.steps
            if done:
                status = "completed"
            if report is not None:
                is_checkpoint = step % checkpoint_every == 0 or done
                report(
                    Report(
                        step=step,
                        metrics=metrics,
                        rows={"evals": eval_rows, "curves": curve_rows, "representations": rep_rows},
                        state=training_state() if is_checkpoint else None,
                        status=status,
                        n_params=n_params,
                        device=str(device),
                    )
                )
            curve_rows = []
    if status == "diverged" and report is not None:
        report(Report(step=step, metrics=metrics, rows={"curves": curve_rows}, status=status,
                      n_params=n_params, device=str(device)))
    return TrialResult(
        status=status,
        steps=step,
        metrics=metrics,
        eval_rows=eval_rows,
        n_params=n_params,
        device=str(device),
        seconds=time.perf_counter() - started,
    )


def _to_cpu(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu().clone()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


def save_state(state: dict[str, Any], path: str) -> None:
    torch.save(state, path)


def load_state(path: str) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=False)
