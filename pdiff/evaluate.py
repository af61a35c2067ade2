"""Test-set accuracy of many parameter vectors: the frozen head runs once, then the changing tail per model.

The tail runs model by model with torch.func.functional_call on the cached features, or (batched=True)
vmapped over chunks of models. On this project's 2-core CPU the per-model loop was 3x faster than vmap
for the BatchNorm subset and 3.6x for the whole model (vmap turns batched conv weights into grouped
convolutions); batching is meant for GPUs.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call, vmap

from pdiff.devices import free_memory_bytes
from pdiff.params import ParamSpec, split_network, tail_parameter_names

MEMORY_BUDGET_BYTES = 2 * 1024**3
ACTIVATION_COPIES = 8  # rough count of feature-sized tensors alive per model inside the tail


@torch.no_grad()
def run_in_batches(module: nn.Module, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    return torch.cat([module(chunk) for chunk in x.split(batch_size)])


@torch.no_grad()
def accuracy(module: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> float:
    """Top-1 accuracy in percent."""
    predictions = torch.cat([module(chunk).argmax(-1) for chunk in x.split(batch_size)])
    return float((predictions == y).double().mean() * 100)


class ParameterEvaluator:
    """Predicts the test set for [N, D] subset vectors written into one base network (in eval mode)."""

    def __init__(self, model: nn.Module, spec: ParamSpec, x_test: torch.Tensor, max_chunk: int = 100,
                 batched: bool = False, batch_size: int = 1000):
        model.eval()
        self.spec, self.batched, self.batch_size = spec, batched, batch_size
        head, self.tail = split_network(model, spec.entries[0].name)
        self.features = run_in_batches(head, x_test)
        self.tail_names = tail_parameter_names(model, self.tail)
        self.fixed = {name: t.detach() for name, t in self.tail.named_parameters()}
        self.fixed.update({name: t for name, t in self.tail.named_buffers()})
        per_model = self.features.numel() * self.features.element_size() * ACTIVATION_COPIES
        budget = free_memory_bytes(self.features.device, MEMORY_BUDGET_BYTES)
        self.chunk = max(1, min(max_chunk, budget // max(per_model, 1)))

    def _logits(self, tail_params: dict[str, torch.Tensor]) -> torch.Tensor:
        return functional_call(self.tail, {**self.fixed, **tail_params}, (self.features,))

    @torch.no_grad()
    def predictions(self, vectors: torch.Tensor) -> torch.Tensor:
        """[N, D] vectors (any device) -> [N, n_test] predicted classes, on the CPU."""
        return torch.cat([self.predict_chunk(chunk) for chunk in vectors.float().split(self.chunk)]).cpu()

    @torch.no_grad()
    def predict_chunk(self, chunk: torch.Tensor) -> torch.Tensor:
        """[M, D] vectors (M <= chunk) -> [M, n_test] predicted classes, on the features' device."""
        chunk = chunk.to(self.features.device)
        batched = {self.tail_names[name]: value for name, value in self.spec.unflatten(chunk).items()}
        if self.batched:
            return vmap(self._logits)(batched).argmax(-1)
        outputs = []
        for index in range(len(chunk)):
            params = {**self.fixed, **{name: value[index] for name, value in batched.items()}}
            outputs.append(torch.cat([functional_call(self.tail, params, (part,)).argmax(-1)
                                      for part in self.features.split(self.batch_size)]))
        return torch.stack(outputs)
