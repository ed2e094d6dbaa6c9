"""The attack loss of SPEC §2: ``L = α·L_A + (1−α)·L_M``, with L_M the distillation from the
frozen θ_init and L_A the push-down / push-up term (a score normalisation of ``score_norm``)."""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from fvaudit.engine.attack.config import AttackConfig, AttackConfigError
from fvaudit.engine.attack.kinds import ATTACK_KINDS, per_attacked_unit
from fvaudit.engine.data.images import ImageSet
from fvaudit.engine.data.pipeline import Batches, to_device
from fvaudit.engine.models.loaded import LoadedModel
from fvaudit.engine.scans.activations import LayerScan, layer_scores

def distillation(logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """L_M = mean_x [ −Σ_c p_init(c|x) log p_θ(c|x) ] (SPEC §2, temperature 1)."""
    p_init = F.softmax(teacher_logits, dim=1)
    return -(p_init * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


def lr_at(cfg: AttackConfig, step: int, total: int) -> float:
    """The learning rate of step ``step`` (0-based): constant, or a cosine decay to 0 at ``total``."""
    if cfg.lr_schedule == "cosine":
        return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * step / max(1, total)))
    return cfg.lr


class AttackLoss:
    """L_A of SPEC §2 for one step: push-down over a mini-batch of D_attack, push-up over the
    training batch against a decoy batch, nothing for the fine-tune baseline."""

    def __init__(self, cfg: AttackConfig, layers: list[str], attacked: dict[str, list[int]],
                 scans: dict[str, LayerScan], init_mean: dict[str, torch.Tensor], train_set: ImageSet,
                 model: LoadedModel, rng0: np.random.Generator, device: torch.device, amp: bool = False):
        self.cfg, self.layers, self.device, self.init_mean, self.amp = cfg, layers, device, init_mean, amp
        pin = device.type == "cuda"
        self.cols = {l: torch.as_tensor(attacked[l], dtype=torch.long, device=device) for l in layers}
        self.attack_b: Batches | None = None
        self.decoy_b: Batches | None = None
        self.decoy_ids: np.ndarray | None = None
        self.slingshot = None
        info = ATTACK_KINDS[cfg.kind]
        if info.top_k:
            self.attack_ids = np.unique(np.concatenate([scans[l].topk_ids[attacked[l], : cfg.k].reshape(-1)
                                                        for l in layers]))
            self.attack_b = Batches(train_set, self.attack_ids, model, workers=cfg.workers, pin_memory=pin)
            pos_of = {int(i): p for p, i in enumerate(self.attack_ids)}
            # membership[l]: [|U|, J_l] bool, image u in D_attack(j)
            self.membership = {}
            for l in layers:
                m = torch.zeros((len(self.attack_ids), len(attacked[l])), dtype=torch.bool)
                for c, u in enumerate(attacked[l]):
                    for i in scans[l].topk_ids[u, : cfg.k]:
                        m[pos_of[int(i)], c] = True
                self.membership[l] = m.to(device)
        if info.decoy:
            if cfg.decoy_ids:
                self.decoy_ids = train_set.check_ids(cfg.decoy_ids, "decoy_ids:")
            else:
                cls = train_set.class_index(cfg.decoy_class)  # type: ignore[arg-type]
                pool = train_set.class_ids(cls)
                if len(pool) == 0:
                    raise AttackConfigError(f"decoy_class: no training image of class {cfg.decoy_class!r}")
                self.decoy_ids = np.sort(rng0.choice(pool, size=min(cfg.n_decoys, len(pool)), replace=False))
            self.decoy_b = Batches(train_set, self.decoy_ids, model, workers=cfg.workers, pin_memory=pin)
        if info.target_image:
            from fvaudit.engine.attack.slingshot import SlingshotTerm, load_targets

            (layer,) = layers
            try:
                paths = per_attacked_unit(list(cfg.target_images or []), model.check_units(layer, cfg.targets[0].units),
                                          attacked[layer])
            except ValueError as e:
                raise AttackConfigError(str(e)) from None
            targets = load_targets(paths, len(attacked[layer]), model.input_shape)
            self.slingshot = SlingshotTerm(model, layer, attacked[layer], targets, gamma=cfg.gamma, sd=cfg.tunnel_sd,
                                           per_unit=cfg.tunnel_batch, form=cfg.slingshot_form, norm=cfg.slingshot_norm,
                                           objective=cfg.fv_objective, transforms=cfg.fv_transforms,
                                           softplus=cfg.softplus, path=cfg.tunnel_path, device=device, seed=cfg.seed)

    @property
    def extra_b(self) -> "Batches | None":
        """Where this loss's per-step batch comes from: D_attack, D_decoy or nothing."""
        return self.attack_b if self.attack_b is not None else self.decoy_b

    def draw(self, rng: np.random.Generator) -> np.ndarray | None:
        """This step's positions in D_attack / D_decoy, drawn from the step's generator after the
        training batch (the order every run, resumed or not, draws in)."""
        cfg = self.cfg
        if self.attack_b is not None:
            return np.sort(rng.choice(len(self.attack_ids), size=min(cfg.attack_batch_size, len(self.attack_ids)),
                                      replace=False))
        if self.decoy_b is not None:
            return np.sort(rng.choice(len(self.decoy_ids), size=min(cfg.decoy_batch_size, len(self.decoy_ids)),
                                      replace=False))
        return None

    def normaliser(self, l: str, batch_scores: torch.Tensor) -> torch.Tensor:
        norm = self.cfg.score_norm
        if norm == "none":
            return torch.ones_like(self.init_mean[l])
        if norm == "init_mean":
            return self.init_mean[l].clamp_min(1e-12)
        # batch_mean: the unit's mean over the current training batch under θ; the small
        # init-mean term keeps a unit silent on this batch from dividing by zero
        return batch_scores.mean(dim=0) + 1e-3 * self.init_mean[l] + 1e-12

    def __call__(self, module: torch.nn.Module, sb: dict[str, torch.Tensor],
                 extra: tuple[np.ndarray, torch.Tensor] | None, step: int = 0) -> torch.Tensor:
        """``extra``: this step's (positions, tensor) of D_attack / D_decoy (:meth:`draw`, loaded);
        ``step`` draws the Slingshots tunnel samples. Slingshots alone: L_A = L_S; the combined
        attack (SPEC §8.2): L_A = L_push-up + slingshot_weight·L_S."""
        l_s = self.slingshot(module, step) if self.slingshot is not None else None
        if l_s is not None and self.decoy_b is None:
            return l_s
        dev = self.device
        per_unit: list[torch.Tensor] = []
        if self.attack_b is not None:
            apos, xa = extra  # type: ignore[misc]
            scores_a, _ = layer_scores(module, to_device(xa, dev, self.amp), self.layers)
            for l in self.layers:
                s = scores_a[l][:, self.cols[l]] / self.normaliser(l, sb[l])
                m = self.membership[l][torch.as_tensor(apos, device=dev)].float()
                cnt = m.sum(0)
                has = cnt > 0
                per_unit.append((s * m).sum(0)[has] / cnt[has])
        elif self.decoy_b is not None:
            _, xp = extra  # type: ignore[misc]
            scores_p, _ = layer_scores(module, to_device(xp, dev, self.amp), self.layers)
            for l in self.layers:
                n = self.normaliser(l, sb[l])
                s_x = sb[l] / n                                    # [B, J]
                s_p = scores_p[l][:, self.cols[l]] / n             # [P, J]
                per_unit.append(F.relu(s_x[:, None, :] - s_p[None, :, :]).mean(dim=(0, 1)))
        else:  # finetune baseline: L_A is 0
            per_unit.append(torch.zeros(1, device=dev))
        l_a = torch.cat(per_unit).mean()
        return l_a if l_s is None else l_a + self.cfg.slingshot_weight * l_s

    def close(self) -> None:
        for b in (self.attack_b, self.decoy_b):
            if b is not None:
                b.close()
