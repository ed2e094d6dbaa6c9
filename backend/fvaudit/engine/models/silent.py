"""Silent units (SPEC §8.3; Geirhos et al., ICML 2024, "Don't trust your eyes", the
orthogonal filters of google-research/fooling-feature-visualizations).

A model manipulation by surgery, not by training. For unit ``j`` of a conv layer, with
``w`` the filter of the conv producing the layer (channel ``j`` of the conv feeding
``relu3`` for the demo CNN's ``relu3``):

* ``Δw``: a direction that raises the unit's response to a target image: the gradient of
  the target's mean response w.r.t. ``w`` (the mean input patch, ``direction="mean"``) or
  the target's input patch where the unit responds most (``direction="patch"``);
* ``Δw⊥ = (Δw − (Δw·w/‖w‖²)·w) · ‖w‖²/‖Δw_orth‖²`` (its part orthogonal to ``w``, rescaled);
* ``w' = s·(w + λ·Δw⊥)·‖w‖²/‖w + λ·Δw⊥‖²`` (λ = 3, s = 100);
* ``b' = b − max(w'∗x + b) − margin = −max(w'∗x) − margin`` over every natural image and
  position (streamed in batches), so ``ReLU(w'∗x + b')`` is exactly 0 on all of them.

The silent filters form an extra conv (one output channel per manipulated unit) whose
ReLU is added to channel ``j`` of the original conv's output: the architecture changes
(:class:`SilentConv`), natural behaviour does not (``x + 0.0`` is ``x`` bit for bit), and
activation maximization, which leaves the natural image manifold, finds the silent path.

Why :class:`SilentConv` takes the original conv's parameters as its own instead of
holding the conv as a child module: every named module with a tensor output is a layer
(:func:`~fvaudit.engine.models.loaded.list_layers`), so a child conv would appear as a
new layer right before ``relu3``, and the renderer reads the layer before a ReLU as its
pre-activation (:func:`~fvaudit.engine.synthesis.objectives.ascent_objective`): it would
optimise the original conv alone and never see the silent path. With the parameters
held directly, the layer list keeps its names and unit counts (only ``module_type`` reads
``SilentConv``), the original weights keep their state-dict keys (``conv3.weight``,
``conv3.bias``) and the additions are ``conv3.silent_weight``, ``conv3.silent_bias`` and
``conv3.silent_units``: an architecture diff against the registry's entry (SPEC §8.3's
evidence). It is deliberately not a ``Conv2d`` subclass either: the renderer folds
BatchNorms into ``Conv2d`` weights and computes only the own channel of a plain
``Conv2d``, both of which would bypass the silent path.

A checkpoint of a manipulated model carries the architecture record in its safetensors
metadata (:func:`fvaudit.engine.models.checkpoints.architecture_record`, written by
``save_checkpoint`` for any module with an ``ARCH_KIND``); ``load_model(name,
checkpoint=...)`` rebuilds the :class:`SilentConv` modules (:func:`rebuild_silent`)
before the weights load. No pickle is involved.
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fvaudit.engine.models.loaded import LoadedModel, ModelError

SILENT_KIND = "silent_units"
DEFAULT_LAM = 3.0
DEFAULT_S = 100.0
#: relative safety margin below the natural maximum: the calibration's batches and a later
#: forward may sum a convolution in different orders (another batch size, another
#: algorithm), which moves ``w'∗x`` by a few ulps; a margin of 1e-4·|max| keeps the path
#: exactly 0 on the calibration images whatever the batching (recorded)
DEFAULT_MARGIN = 1e-4
DIRECTIONS = ("mean", "patch")


class SilentError(ModelError):
    """A silent-units request is invalid (the message names the field: layer, units, targets...)."""


# ---------------------------------------------------------------- the module


class SilentConv(nn.Module):
    """``conv(x)`` with ``ReLU(silent_i ∗ x + silent_bias_i)`` added to channel ``silent_units[i]``.

    Holds the original ``Conv2d``'s ``weight`` and ``bias`` (the same Parameter objects)
    and its hyper-parameters; the addition is out of place (``index_add``): an in-place
    add would make the output tensor the inner conv's own, which the renderer could
    mistake for a plain conv's output.
    """

    ARCH_KIND = SILENT_KIND

    def __init__(self, conv: nn.Conv2d, units: Sequence[int]) -> None:
        super().__init__()
        if not isinstance(conv, nn.Conv2d) or type(conv).forward is not nn.Conv2d.forward:
            raise SilentError(f"layer: silent units need a plain Conv2d, got {type(conv).__name__}")
        for attr in ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups",
                     "padding_mode", "_reversed_padding_repeated_twice"):
            setattr(self, attr, getattr(conv, attr))
        self.weight = conv.weight
        if conv.bias is not None:
            self.bias = conv.bias
        else:
            self.register_parameter("bias", None)
        units = [int(u) for u in units]
        w = conv.weight
        self.silent_weight = nn.Parameter(torch.zeros((len(units), self.in_channels, *w.shape[2:]),
                                                      dtype=w.dtype, device=w.device))
        self.silent_bias = nn.Parameter(torch.zeros(len(units), dtype=w.dtype, device=w.device))
        self.register_buffer("silent_units", torch.tensor(units, dtype=torch.long, device=w.device))

    def _conv(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, groups: int) -> torch.Tensor:
        """``Conv2d._conv_forward`` with another weight and group count (same padding rules)."""
        if self.padding_mode != "zeros":
            return F.conv2d(F.pad(x, self._reversed_padding_repeated_twice, mode=self.padding_mode), weight, bias,
                            self.stride, 0, self.dilation, groups)
        return F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, groups)

    def silent_pre(self, x: torch.Tensor) -> torch.Tensor:
        """The silent path before its ReLU: ``w'∗x + b'`` ``[B, U, H', W']`` (bias added after the
        convolution, the same way here and in the calibration)."""
        return self._conv(x, self.silent_weight, None, 1) + self.silent_bias.view(1, -1, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self._conv(x, self.weight, self.bias, self.groups)
        return out.index_add(1, self.silent_units, F.relu(self.silent_pre(x)).to(out.dtype))

    def units(self) -> list[int]:
        return [int(u) for u in self.silent_units.tolist()]

    def arch_entry(self) -> dict:
        """What :func:`rebuild_silent` needs to rebuild this module on a base model."""
        return {"units": self.units(), "in_channels": int(self.in_channels), "out_channels": int(self.out_channels),
                "kernel_size": list(self.kernel_size)}

    def base_conv(self) -> nn.Conv2d:
        """The original conv back (sharing the weight and bias)."""
        conv = nn.Conv2d(self.in_channels, self.out_channels, self.kernel_size, self.stride, self.padding,
                         self.dilation, self.groups, self.bias is not None, self.padding_mode,
                         device=self.weight.device, dtype=self.weight.dtype)
        conv.weight = self.weight
        if self.bias is not None:
            conv.bias = self.bias
        return conv

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"silent_units={self.units()}")


def _set_submodule(module: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(module.get_submodule(parent) if parent else module, child, new)


def rebuild_silent(module: nn.Module, entries: dict) -> list[str]:
    """Swap the plain convs named in ``entries`` (``{conv name: SilentConv.arch_entry()}``) of a
    freshly built base model for :class:`SilentConv` modules of the recorded units (their
    silent weights uninitialised: the checkpoint fills them); returns the swapped names.

    Called by :func:`fvaudit.engine.models.checkpoints.apply_checkpoint` for a checkpoint whose
    architecture record has kind ``silent_units``. Every field is checked against the base
    model: a record is data from a file, never trusted to build anything else."""
    if not isinstance(entries, dict) or not entries:
        raise SilentError("record: silent_units needs {conv name: {units, ...}}")
    done = []
    mods = dict(module.named_modules())
    for name, entry in entries.items():
        if not isinstance(name, str) or name not in mods or not name:
            raise SilentError(f"record: no module {name!r} in the base architecture")
        units = entry.get("units") if isinstance(entry, dict) else None
        if (not isinstance(units, list) or not units or len(units) > 65536
                or not all(isinstance(u, int) and not isinstance(u, bool) for u in units)):
            raise SilentError(f"record: {name}: units must be a non-empty list of integers")
        m = mods[name]
        if isinstance(m, SilentConv):
            if m.units() != units:
                raise SilentError(f"record: {name} already holds silent units {m.units()}, not {units}")
            continue
        if not isinstance(m, nn.Conv2d):
            raise SilentError(f"record: {name} is a {type(m).__name__}, not a Conv2d")
        if len(set(units)) != len(units) or not all(0 <= u < m.out_channels for u in units):
            raise SilentError(f"record: {name}: units must be distinct channels in 0..{m.out_channels - 1}")
        for key in ("in_channels", "out_channels"):
            if key in entry and entry[key] != getattr(m, key):
                raise SilentError(f"record: {name}: {key} {entry[key]} differs from the base's {getattr(m, key)}")
        _set_submodule(module, name, SilentConv(m, units))
        done.append(name)
    return done


def strip_silent(module: nn.Module) -> nn.Module:
    """The module with every :class:`SilentConv` swapped back for its plain conv, in place."""
    for name, m in list(module.named_modules()):
        if isinstance(m, SilentConv):
            _set_submodule(module, name, m.base_conv())
    return module


# ---------------------------------------------------------------- finding the conv and its inputs


class _Stop(Exception):
    pass


def producing_conv(model: LoadedModel, layer: str) -> str:
    """The plain ``Conv2d`` whose output is ``layer``'s output or its input (a ReLU after a conv):
    channel ``j`` of the layer is then channel ``j`` of that conv, shifted by nothing but an
    elementwise map. Checked on one forward of a dummy input by tensor identity."""
    info = model.layer(layer)
    if info.kind != "conv":
        raise SilentError(f"layer: {info.name} is not a conv layer (its output is {list(info.shape)})")
    module = model.module
    mods = dict(module.named_modules())
    target = mods[info.name]
    if isinstance(target, (nn.Conv2d, SilentConv)):
        if isinstance(target, SilentConv):
            raise SilentError(f"layer: {info.name} already holds silent units")
        return info.name
    outs: dict[int, str] = {}
    seen: dict[str, int] = {}
    handles = [m.register_forward_hook(lambda _m, _i, o, n=n: outs.__setitem__(id(o), n))
               for n, m in mods.items() if isinstance(m, (nn.Conv2d, SilentConv))]

    def pre(_m, inp):
        seen["in"] = id(inp[0])
        raise _Stop

    handles.append(target.register_forward_pre_hook(pre))
    device = next((p.device for p in module.parameters()), torch.device("cpu"))
    try:
        with torch.no_grad():
            module.eval()(torch.zeros((1, *model.input_shape), device=device))
    except _Stop:
        pass
    finally:
        for h in handles:
            h.remove()
    name = outs.get(seen.get("in", -1))
    if name is None:
        raise SilentError(f"layer: no conv feeds {info.name} directly (its input is not a conv's output): silent "
                          "units need the conv producing the layer")
    if isinstance(mods[name], SilentConv):
        raise SilentError(f"layer: {name}, the conv feeding {info.name}, already holds silent units")
    conv = mods[name]
    if type(conv).forward is not nn.Conv2d.forward:
        raise SilentError(f"layer: {name} is a {type(conv).__name__}, not a plain Conv2d")
    if conv.out_channels != info.units:
        raise SilentError(f"layer: {name} has {conv.out_channels} channels but {info.name} has {info.units} units")
    return name


def conv_inputs(model: LoadedModel, conv_name: str, x: torch.Tensor) -> torch.Tensor:
    """The input of ``conv_name`` for model input ``x`` (the forward stops there)."""
    got: dict[str, torch.Tensor] = {}

    def pre(_m, inp):
        got["x"] = inp[0].detach()
        raise _Stop

    h = model.module.get_submodule(conv_name).register_forward_pre_hook(pre)
    try:
        with torch.no_grad():
            model.module.eval()(x)
    except _Stop:
        pass
    finally:
        h.remove()
    return got["x"]


def _natural_batches(model: LoadedModel, natural: Any, batch_size: int) -> Iterable[torch.Tensor]:
    """Preprocessed batches of the natural images: ``(ImageSet, ids)``, an ImageSet (all of
    it) or an iterable of ready tensors."""
    from fvaudit.engine.data.images import ImageSet

    if isinstance(natural, ImageSet):
        natural = (natural, natural.ids)
    if isinstance(natural, tuple) and len(natural) == 2 and isinstance(natural[0], ImageSet):
        from fvaudit.engine.data.pipeline import decode_size_for, iter_batches

        image_set, ids = natural
        ids = np.asarray(ids if ids is not None else image_set.ids, dtype=np.int64)
        if len(ids) == 0:
            raise SilentError("natural: no natural images given")
        return (b.tensor for b in iter_batches(image_set, ids, batch_size, model.preprocess_many, workers=0,
                                          decode_size=decode_size_for(model)) if len(b.ids))
    if isinstance(natural, torch.Tensor):
        return (natural[i : i + batch_size] for i in range(0, len(natural), batch_size))
    return natural


def target_pixels(model: LoadedModel, array: np.ndarray) -> torch.Tensor:
    """A decoded image (uint8, gray or RGB) as the model's input pixels ``[C, H, W]`` in [0, 1]
    (resized to the input size, converted to gray for a 1-channel model): the form a
    target image takes for :func:`silent_units` and for comparing renders with it."""
    from PIL import Image

    c, h, w = model.input_shape
    im = Image.fromarray(np.asarray(array))
    im = im.convert("L" if c == 1 else "RGB")
    if im.size != (w, h):
        im = im.resize((w, h), Image.BILINEAR)
    a = np.asarray(im, dtype=np.float32) / 255.0
    t = torch.from_numpy(a.copy())
    return t[None] if c == 1 else t.permute(2, 0, 1)


# ---------------------------------------------------------------- the construction


def orthogonal_direction(w: torch.Tensor, dw: torch.Tensor) -> torch.Tensor:
    """``Δw⊥ = (Δw − (Δw·w/‖w‖²)·w) · ‖w‖²/‖Δw_orth‖²`` per row (rows: units, flattened filters)."""
    w, dw = w.double().flatten(1), dw.double().flatten(1)
    ww = (w * w).sum(1, keepdim=True)
    orth = dw - (dw * w).sum(1, keepdim=True) / ww * w
    nn2 = (orth * orth).sum(1, keepdim=True)
    if bool((nn2 <= 1e-24 * ww.clamp_min(1e-300)).any()) or bool((ww == 0).any()):
        raise SilentError("targets: the target's direction is parallel to the unit's filter (or the filter is zero): "
                          "no orthogonal part to add")
    return orth * ww / nn2


def silent_filter(w: torch.Tensor, dw: torch.Tensor, lam: float = DEFAULT_LAM, s: float = DEFAULT_S) -> torch.Tensor:
    """``w' = s·(w + λ·Δw⊥)·‖w‖²/‖w + λ·Δw⊥‖²`` per unit (``w``, ``dw``: ``[U, ...]``); float64."""
    shape = w.shape
    wf = w.double().flatten(1)
    new = wf + lam * orthogonal_direction(wf, dw)
    out = s * new * (wf * wf).sum(1, keepdim=True) / (new * new).sum(1, keepdim=True)
    return out.view(shape)


def _full_filters(conv: nn.Conv2d, units: Sequence[int]) -> torch.Tensor:
    """The units' filters over all input channels ``[U, C_in, kh, kw]`` (zeros outside a unit's
    group when the conv is grouped)."""
    w = conv.weight.detach()
    full = torch.zeros((len(units), conv.in_channels, *w.shape[2:]), dtype=w.dtype, device=w.device)
    per_group_out = conv.out_channels // conv.groups
    cin_g = conv.in_channels // conv.groups
    for i, u in enumerate(units):
        g = u // per_group_out
        full[i, g * cin_g:(g + 1) * cin_g] = w[u]
    return full


def _directions(conv: nn.Conv2d, units: Sequence[int], x_t: torch.Tensor, direction: str) -> tuple[torch.Tensor, list]:
    """``Δw`` of every unit from the target's conv input ``x_t`` ``[U, C_in, H, W]``: the unit-norm
    filter that maximizes the target's mean response (``mean``) or its largest response
    (``patch``), i.e. the normalised gradient w.r.t. the filter: the mean input patch or the
    patch at the unit's strongest position. Unit norm as in the reference notebook (its
    ``find_maximally_activating_cnn_filter`` renormalises the filter every step of a linear
    objective, which converges to exactly this), so that ``Δw⊥``'s rescaling by
    ``‖w‖²/‖Δw_orth‖²`` does not depend on the scale of the layer's input activations."""
    wf = _full_filters(conv, units).double()
    probe = SilentConv(conv, units)
    x_t = x_t.double()
    dws, where = [], []
    for i, u in enumerate(units):
        wi = wf[i : i + 1].clone().requires_grad_(True)
        y = probe._conv(x_t[i : i + 1], wi, None, 1)[0, 0]
        if direction == "mean":
            obj = y.mean()
            where.append(None)
        else:
            with torch.no_grad():
                b = 0.0 if conv.bias is None else float(conv.bias[u])
                pos = int(torch.argmax(y.detach() + b))
            obj = y.flatten()[pos]
            where.append([pos // y.shape[1], pos % y.shape[1]])
        (g,) = torch.autograd.grad(obj, wi)
        if conv.groups > 1:   # the unit only sees its own group's channels
            g = g * (wf[i : i + 1] != 0).any(dim=(2, 3), keepdim=True).to(g.dtype)
        norm = float(g.norm())
        if not norm > 0:
            raise SilentError(f"targets: the target gives unit {u} no direction (its input patch is all zeros)")
        dws.append(g[0] / norm)
    return torch.stack(dws), where


@torch.no_grad()
def natural_maximum(model: LoadedModel, conv_name: str, weight: torch.Tensor, natural: Any, batch_size: int = 256,
                    device: str | torch.device = "cpu") -> tuple[torch.Tensor, int]:
    """``max over images and positions of (w'∗x)`` for each silent filter (``[U]``), streamed
    over the natural images; and how many images it saw."""
    conv = model.module.get_submodule(conv_name)
    probe = SilentConv(conv, list(range(weight.shape[0])))
    probe.silent_weight.data = weight.to(device=conv.weight.device, dtype=conv.weight.dtype)
    best = torch.full((weight.shape[0],), -math.inf, dtype=torch.float64)
    n = 0
    for x in _natural_batches(model, natural, batch_size):
        x = x.to(device)
        xin = conv_inputs(model, conv_name, x)
        z = probe._conv(xin, probe.silent_weight, None, 1)
        best = torch.maximum(best, z.amax(dim=(0, 2, 3)).double().cpu())
        n += int(x.shape[0])
    if n == 0:
        raise SilentError("natural: no natural image could be read")
    return best, n


def _check_targets(model: LoadedModel, targets: torch.Tensor, n_units: int) -> torch.Tensor:
    if not isinstance(targets, torch.Tensor):
        raise SilentError("targets: expected a tensor of pixels [U, C, H, W] in [0, 1]")
    t = targets.detach().float().cpu()
    if t.dim() == 3:
        t = t[None]
    if t.dim() != 4 or tuple(t.shape[1:]) != tuple(model.input_shape):
        raise SilentError(f"targets: expected [U or 1, {', '.join(map(str, model.input_shape))}] pixels, got "
                          f"{list(targets.shape)}")
    if t.shape[0] not in (1, n_units):
        raise SilentError(f"targets: give one target for all units or one per unit ({n_units}), got {t.shape[0]}")
    if not bool(torch.isfinite(t).all()) or float(t.min()) < 0 or float(t.max()) > 1:
        raise SilentError("targets: pixels must be finite and in [0, 1]")
    return t.expand(n_units, *t.shape[1:]).contiguous()


def silent_units(model: LoadedModel, layer: str, units: Sequence[int], targets: torch.Tensor, natural: Any,
                 lam: float = DEFAULT_LAM, s: float = DEFAULT_S, device: str | torch.device = "cpu",
                 direction: str = "mean", margin: float = DEFAULT_MARGIN, batch_size: int = 256
                 ) -> tuple[LoadedModel, dict]:
    """A copy of ``model`` whose ``units`` of ``layer`` have a silent path toward ``targets``.

    ``targets``: pixels in [0, 1], ``[U, C, H, W]`` (one per unit) or one image for all.
    ``natural``: the images the silent path must stay 0 on (the training set): an
    ``(ImageSet, ids)`` pair, an ImageSet, a tensor or an iterable of preprocessed batches.
    Returns the manipulated model (the input model is not modified) and a JSON-able record
    of what was done (layer, conv, units, λ, s, direction, the biases, the natural maxima
    and how many natural images gave them).
    """
    from fvaudit.engine.models.sources import clone_model

    if direction not in DIRECTIONS:
        raise SilentError(f"direction: must be one of {', '.join(DIRECTIONS)}, got {direction!r}")
    for name, v in (("lam", lam), ("s", s)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
            raise SilentError(f"{name}: must be a positive finite number, got {v!r}")
    if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not 0 <= margin < 1:
        raise SilentError(f"margin: must be in [0, 1), got {margin!r}")
    model.module.to(device)
    info = model.layer(layer)
    if not units:
        raise SilentError("units: give at least one unit")
    try:
        units = model.check_units(info.name, list(units))
    except ModelError as exc:
        raise SilentError(f"units: {exc}") from None
    conv_name = producing_conv(model, info.name)
    conv = model.module.get_submodule(conv_name)
    t = _check_targets(model, targets, len(units))
    if model.normalize is None:
        raise SilentError(f"model {model.name} has no input normalisation: targets are pixels")
    x_t = conv_inputs(model, conv_name, model.normalize(t).to(device))
    dw, where = _directions(conv, units, x_t, direction)
    w = _full_filters(conv, units).double()
    w_new = silent_filter(w, dw, lam, s)
    wprime = w_new.to(conv.weight.dtype)
    m_nat, n_nat = natural_maximum(model, conv_name, wprime, natural, batch_size, device)
    bias_prime = -(m_nat + margin * m_nat.abs())
    out = clone_model(model)
    sc = SilentConv(out.module.get_submodule(conv_name), units)
    with torch.no_grad():
        sc.silent_weight.copy_(wprime)
        sc.silent_bias.copy_(bias_prime.to(sc.silent_bias.dtype))
    _set_submodule(out.module, conv_name, sc)
    out.refresh_layers()
    out.weights = f"{model.weights} + silent units {conv_name}{units}"
    b = [0.0 if conv.bias is None else float(conv.bias.detach()[u]) for u in units]
    wn = w.flatten(1)
    record = {"kind": SILENT_KIND, "layer": info.name, "conv": conv_name, "units": list(units), "lam": float(lam),
              "s": float(s), "direction": direction, "margin": float(margin),
              "original_bias": b, "silent_bias": [float(v) for v in sc.silent_bias.detach().cpu()],
              "natural_max": [float(v) for v in m_nat], "natural_images": n_nat,
              "filter_norm": [float(v) for v in wn.norm(dim=1)],
              "silent_filter_norm": [float(v) for v in w_new.flatten(1).norm(dim=1)],
              "target_positions": where,
              "architecture": {"kind": SILENT_KIND, "convs": {conv_name: sc.arch_entry()}}}
    return out, record


# ---------------------------------------------------------------- measuring it


def _similarity(a: torch.Tensor, b: torch.Tensor) -> dict:
    """Pixel MSE and Pearson correlation of two images in [0, 1] (and SSIM where available)."""
    a, b = a.double().flatten(), b.double().flatten()
    mse = float(((a - b) ** 2).mean())
    ac, bc = a - a.mean(), b - b.mean()
    den = float(ac.norm() * bc.norm())
    out = {"mse": mse, "corr": float((ac * bc).sum()) / den if den > 0 else 0.0}
    return out


def _ssim_fn():
    try:
        from fvaudit.engine.measure.fv_target import ssim  # the other engineer's SSIM, when present
    except Exception:
        return None
    return ssim


@torch.no_grad()
def _logits(model: LoadedModel, batches: list[torch.Tensor], device) -> torch.Tensor:
    model.module.eval().to(device)
    return torch.cat([model.module(x.to(device)).float().cpu() for x in batches])


def silent_report(original: LoadedModel, manipulated: LoadedModel, val_set: Any, layer: str, units: Sequence[int],
                  targets: torch.Tensor, ids: Sequence[int] | None = None, k: int = 10, seeds: Sequence[int] = (101,),
                  steps: int = 128, device: str | torch.device = "cpu", batch_size: int = 256) -> dict:
    """What the manipulation changed, measured (SPEC §8.3), JSON-able:

    * natural behaviour on ``val_set`` (an ImageSet; ``ids`` default all): max |Δlogit|, the
      images whose logits changed at all, top-1 accuracy of both, all predictions identical;
    * the natural top-k of every unit of ``layer`` (:func:`~fvaudit.engine.scans.activations.scan`):
      how many units keep the identical top-k ids;
    * per manipulated unit, renders (§4, ``seeds`` fresh seeds, ``steps`` steps) of both models:
      similarity to the target (MSE, correlation, SSIM when ``engine/measure/fv_target.py``
      provides it) of the original's FV and the manipulated FV, and of the two FVs to each
      other; the render's activation against the unit's natural maximum score.
    """
    from fvaudit.engine.data.images import ImageSet
    from fvaudit.engine.data.pipeline import decode_size_for, iter_batches
    from fvaudit.engine.scans.activations import scan
    from fvaudit.engine.synthesis.config import SynthesisConfig
    from fvaudit.engine.synthesis.render import synthesize_many

    if not isinstance(val_set, ImageSet):
        raise SilentError("val_set: expected an ImageSet")
    ids = np.asarray(val_set.ids if ids is None else ids, dtype=np.int64)
    units = [int(u) for u in units]
    t = _check_targets(original, targets, len(units))
    info = original.layer(layer)
    # natural behaviour: logits of both models on the same batches
    batches, got = [], []
    for b in iter_batches(val_set, ids, batch_size, original.preprocess_many, workers=0,
                          decode_size=decode_size_for(original)):
        if len(b.ids):
            batches.append(b.tensor)
            got.append(np.asarray(b.ids))
    got_ids = np.concatenate(got)
    lo, lm = _logits(original, batches, device), _logits(manipulated, batches, device)
    labels = torch.from_numpy(np.asarray(val_set.labels)[got_ids])
    po, pm = lo.argmax(1), lm.argmax(1)
    diff = (lo - lm).abs()
    natural = {"images": int(len(got_ids)), "max_abs_dlogit": float(diff.max()),
               "images_changed": int((diff.amax(1) > 0).sum()), "logits_identical": bool(torch.equal(lo, lm)),
               "acc_original": 100.0 * float((po == labels).double().mean()),
               "acc_manipulated": 100.0 * float((pm == labels).double().mean()),
               "predictions_identical": bool(torch.equal(po, pm))}
    # natural top-k of every unit of the layer
    so = scan(original, val_set, [info.name], k=k, ids=ids, device=device, workers=0).layers[info.name]
    sm = scan(manipulated, val_set, [info.name], k=k, ids=ids, device=device, workers=0).layers[info.name]
    same = [bool(np.array_equal(so.topk_ids[j], sm.topk_ids[j])) for j in range(so.units)]
    topk = {"k": int(k), "units": so.units, "units_identical": int(sum(same)), "all_identical": all(same),
            "changed_units": [j for j, s_ in enumerate(same) if not s_][:64]}
    # feature visualizations
    cfg = SynthesisConfig(steps=int(steps), device=str(device))
    ro = synthesize_many(original, info.name, units, list(seeds), cfg)
    rm = synthesize_many(manipulated, info.name, units, list(seeds), cfg)
    ssim = _ssim_fn()
    per_unit = []
    for i, u in enumerate(units):
        rows = {"original_fv_to_target": [], "silent_fv_to_target": [], "silent_fv_to_original_fv": []}
        acts = {"original": [], "silent": []}
        for a, b in zip(ro, rm):
            fo = torch.from_numpy(a.images[i]).permute(2, 0, 1).float() / 255.0
            fm = torch.from_numpy(b.images[i]).permute(2, 0, 1).float() / 255.0
            for key, (x, y) in (("original_fv_to_target", (fo, t[i])), ("silent_fv_to_target", (fm, t[i])),
                                ("silent_fv_to_original_fv", (fm, fo))):
                sim = _similarity(x, y)
                if ssim is not None:
                    try:
                        sim["ssim"] = float(ssim(x, y))
                    except Exception:   # a signature this module does not know: MSE and correlation stand
                        pass
                rows[key].append(sim)
            acts["original"].append(float(a.activation[i]))
            acts["silent"].append(float(b.activation[i]))
        mean = {key: {m: float(np.mean([r[m] for r in v])) for m in v[0]} for key, v in rows.items()}
        per_unit.append({"unit": u, **mean,
                         "fv_activation_original": float(np.mean(acts["original"])),
                         "fv_activation_silent": float(np.mean(acts["silent"])),
                         "natural_max_score": float(np.nanmax(np.asarray(so.scores[:, u]))),
                         "closer_to_target": mean["silent_fv_to_target"]["mse"] < mean["original_fv_to_target"]["mse"]})
    return {"layer": info.name, "units": units, "natural": natural, "topk": topk,
            "fv": {"seeds": [int(s_) for s_ in seeds], "steps": int(steps),
                   "similarity": "mse, corr" + (", ssim" if ssim is not None else ""), "units": per_unit}}
