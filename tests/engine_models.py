"""Small models made by the tests, as torch module factories (``engine_models:tiny_cnn``)."""

from __future__ import annotations

import torch
from torch import nn


class TinyCnn(nn.Module):
    """A small image classifier with seeded random weights. Its logits are scaled up so
    that real photos give confident top-1 classes, as a trained classifier's do."""

    input_names = ("input",)
    output_names = ("logits", "features")

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(),
        )
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.body(x).mean(dim=(2, 3))
        return self.fc(features) * 8.0, features


def tiny_cnn() -> TinyCnn:
    state = torch.random.get_rng_state()
    torch.manual_seed(7)
    try:
        return TinyCnn().eval()
    finally:
        torch.random.set_rng_state(state)
