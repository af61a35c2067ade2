"""Test-set accuracy of many parameter vectors: the frozen head runs once, then the changing tail
per model.

The tail runs model by model with torch.func.functional_call on the cached features, or
(batched=True) vmapped over chunks of models. On this project's 2-core CPU the per-model loop was 3x
faster than vmap for the BatchNorm subset and 3.6x for the whole model (vmap turns batched conv
weights into grouped convolutions); batching is meant for GPUs.
"""

from __future__ import annotations

import time

import torch
from torch import nn
from torch.func import functional_call, vmap

from pdiff.data.tasknets import run_in_batches
from pdiff.training.devices import free_memory_bytes, synchronize
from pdiff.zoo.params import ParamSpec, clamp_statistics, split_network, tail_tensor_names

MEMORY_BUDGET_BYTES = 2 * 1024**3
ACTIVATION_COPIES = 8  # rough count of feature-sized tensors alive per model inside the tail


class ParameterEvaluator:
    """Predicts the test set for [N, D] subset vectors written into one base network (in eval mode).

    With `recalibration` (batches of training inputs), each model's BatchNorm running statistics
    from the first generated layer on are first re-estimated on them (train-mode forwards, a
    cumulative average, nothing else changes), as generated whole models need; every model evaluated
    with it is treated alike. Norm layers of the frozen head keep the base model's statistics (their
    inputs never change). Without it, a vector that carries running statistics
    (task.param.statistics) is evaluated with its own.
    """

    def __init__(
        self,
        model: nn.Module,
        spec: ParamSpec,
        x_test: torch.Tensor,
        max_chunk: int = 100,
        batched: bool = False,
        batch_size: int = 1000,
        recalibration: list[torch.Tensor] | None = None,
    ):
        model.eval()
        self.spec, self.batched, self.batch_size = (
            spec,
            batched and recalibration is None,
            batch_size,
        )
        head, self.tail = split_network(model, spec.entries[0].name)
        self.features = run_in_batches(head, x_test)
        if (
            self.batched
        ):  # the vmapped tail runs in float32 (_batched_logits): its input too, cast once
            self.features = self.features.float()
        self.recalibration = (
            [run_in_batches(head, batch) for batch in recalibration] if recalibration else None
        )
        self.norms = [
            (f"{name}." if name else "", m)
            for name, m in self.tail.named_modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
        ]
        self.tail_names = tail_tensor_names(model, self.tail)
        self.fixed = {name: t.detach() for name, t in self.tail.named_parameters()}
        self.fixed.update({name: t for name, t in self.tail.named_buffers()})
        per_model = self.features.numel() * self.features.element_size() * ACTIVATION_COPIES
        budget = free_memory_bytes(self.features.device, MEMORY_BUDGET_BYTES)
        self.chunk = max(1, min(max_chunk, budget // max(per_model, 1)))
        self.recalibration_seconds, self.recalibrated = (
            0.0,
            0,
        )  # time spent re-estimating statistics, for how many

    @property
    def recalibration_seconds_per_model(self) -> float:
        return self.recalibration_seconds / max(self.recalibrated, 1)

    def _logits(self, tail_params: dict[str, torch.Tensor]) -> torch.Tensor:
        return functional_call(self.tail, {**self.fixed, **tail_params}, (self.features,))

    def _batched_logits(self, batched: dict[str, torch.Tensor]) -> torch.Tensor:
        """[M, n_test, classes] logits of M models at once, in float32 whatever autocast the caller
        set (bf16 under task.precision=bf16): vmap's batch-norm rule needs its input and running
        statistics in one dtype, and statistics cast to bf16 would lose digits."""
        device_type = self.features.device.type
        if not torch.amp.is_autocast_available(
            device_type
        ):  # no autocast to turn off (the meta device)
            return vmap(self._logits)(batched)
        with torch.autocast(device_type, enabled=False):
            return vmap(self._logits)(batched)

    @torch.no_grad()
    def predictions(self, vectors: torch.Tensor) -> torch.Tensor:
        """[N, D] vectors (any device) -> [N, n_test] predicted classes, on the CPU."""
        return torch.cat(
            [self.predict_chunk(chunk) for chunk in vectors.float().split(self.chunk)]
        ).cpu()

    @torch.no_grad()
    def _recalibrated_statistics(self, params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Fresh running statistics of every BatchNorm in the tail for the model `params` describes."""
        statistics = {}
        for prefix, norm in self.norms:
            statistics.update(
                {
                    f"{prefix}running_mean": torch.zeros_like(norm.running_mean),
                    f"{prefix}running_var": torch.ones_like(norm.running_var),
                    f"{prefix}num_batches_tracked": torch.zeros_like(norm.num_batches_tracked),
                }
            )
        norms = [norm for _, norm in self.norms]
        momenta = [norm.momentum for norm in norms]
        try:
            for norm in norms:
                norm.momentum = None  # a cumulative average over the recalibration batches
                norm.train()
            for batch in self.recalibration:
                functional_call(
                    self.tail, {**params, **statistics}, (batch,)
                )  # updates `statistics` in place
        finally:
            for norm, momentum in zip(norms, momenta):
                norm.momentum = momentum
                norm.eval()
        return statistics

    @torch.no_grad()
    def predict_chunk(self, chunk: torch.Tensor) -> torch.Tensor:
        """[M, D] vectors (M <= chunk) -> [M, n_test] predicted classes, on the features' device."""
        chunk = chunk.to(self.features.device)
        written = clamp_statistics(self.spec, self.spec.unflatten(chunk))
        batched = {self.tail_names[name]: value for name, value in written.items()}
        if self.batched:
            return self._batched_logits(batched).argmax(-1)
        outputs = []
        for index in range(len(chunk)):
            params = {**self.fixed, **{name: value[index] for name, value in batched.items()}}
            if self.recalibration is not None:
                started = time.perf_counter()
                params.update(self._recalibrated_statistics(params))
                synchronize(chunk.device)  # the statistics are ready only after their kernels ran
                self.recalibration_seconds += time.perf_counter() - started
                self.recalibrated += 1
            outputs.append(
                torch.cat(
                    [
                        functional_call(self.tail, params, (part,)).argmax(-1)
                        for part in self.features.split(self.batch_size)
                    ]
                )
            )
        return torch.stack(outputs)
