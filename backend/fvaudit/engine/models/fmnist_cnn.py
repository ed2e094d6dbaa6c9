"""The demo model: a small CNN for Fashion-MNIST, trained by a reproducible command.

`fvaudit train-demo-model` trains it (fixed seed, fixed schedule) and writes
safetensors; the result ships inside the package (`fvaudit/assets/fmnist_cnn.safetensors`)
so the demo and the tests need no download. Its last conv layer has 128 channels, the
layer the demo experiment attacks; SPEC §1 notes that some of them are dead after ReLU.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

DEMO_MODEL = "fmnist-cnn"
FMNIST_MEAN = 0.2860
FMNIST_STD = 0.3530


class FashionCNN(nn.Module):
    """conv(32)-pool-conv(64)-pool-conv(128)-pool-fc(128)-fc(10); input [B,1,28,28]."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(2)
        self.conv3 = nn.Conv2d(64, 128, 3, padding=1)
        self.relu3 = nn.ReLU()
        self.pool3 = nn.MaxPool2d(2)
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(128 * 3 * 3, 128)
        self.relu4 = nn.ReLU()
        self.fc2 = nn.Linear(128, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.relu1(self.conv1(x)))
        x = self.pool2(self.relu2(self.conv2(x)))
        x = self.pool3(self.relu3(self.conv3(x)))
        return self.fc2(self.relu4(self.fc1(self.flatten(x))))


def normalize_uint8(images: np.ndarray) -> torch.Tensor:
    """uint8 [N,28,28] -> float [N,1,28,28] standardised with the Fashion-MNIST stats."""
    x = torch.from_numpy(np.ascontiguousarray(images)).float().div_(255.0)
    return x.sub_(FMNIST_MEAN).div_(FMNIST_STD).unsqueeze(1)


def train_fashion_cnn(
    train_images: np.ndarray,
    train_labels: np.ndarray,
    test_images: np.ndarray,
    test_labels: np.ndarray,
    epochs: int = 6,
    batch_size: int = 128,
    lr: float = 1e-3,
    seed: int = 0,
    on_epoch: Callable[[int, float, float], None] | None = None,
) -> tuple[FashionCNN, float]:
    """Train the demo CNN deterministically on CPU; return (model, test accuracy %)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = FashionCNN()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    x_train = normalize_uint8(train_images)
    y_train = torch.from_numpy(train_labels.astype(np.int64))
    x_test = normalize_uint8(test_images)
    y_test = torch.from_numpy(test_labels.astype(np.int64))
    acc = 0.0
    for epoch in range(epochs):
        model.train()
        t0 = time.time()
        order = torch.from_numpy(rng.permutation(len(x_train)))
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            loss = nn.functional.cross_entropy(model(x_train[idx]), y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sched.step()
        acc = evaluate(model, x_test, y_test)
        if on_epoch:
            on_epoch(epoch, acc, time.time() - t0)
    return model.eval(), acc


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> float:
    model.eval()
    correct = 0
    for start in range(0, len(x), batch_size):
        correct += (model(x[start : start + batch_size]).argmax(1) == y[start : start + batch_size]).sum().item()
    return 100.0 * correct / max(len(x), 1)


def save_demo_weights(model: FashionCNN, path: Path, test_accuracy: float) -> None:
    from safetensors.torch import save_model

    path.parent.mkdir(parents=True, exist_ok=True)
    save_model(model, str(path), metadata={"test_accuracy": f"{test_accuracy:.2f}", "arch": "FashionCNN"})
