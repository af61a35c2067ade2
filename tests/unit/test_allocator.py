"""Kept buffers: a large tensor allocated again and again stops faulting its pages in."""

import subprocess
import sys

PROBE = """
import resource, sys, torch
from torch import nn
from pdiff.allocator import keep_freed_memory
kept = keep_freed_memory() if sys.argv[1] == "keep" else False
net = nn.Sequential(nn.Linear(40, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU())
x = torch.randn(16000, 40)
with torch.no_grad():  # the test set through one model, then through the next: [N, 1,024] activations
    for batch in (16000, 2000):
        torch.cat([net(part).argmax(-1) for part in x.split(batch)])
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(3):
        torch.cat([net(part).argmax(-1) for part in x.split(2000)])
print(kept, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def faults(mode: str) -> tuple[str, int]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True
    ).stdout.split()
    return out[0], int(out[1])


def test_kept_memory_is_reused_without_page_faults():
    kept, with_keeping = faults("keep")
    _, without = faults("default")
    assert kept == "True"  # glibc here
    assert without > 5_000  # the allocations fault their 2,000 pages in again and again ...
    assert with_keeping < 500  # ... unless the freed buffer is kept
