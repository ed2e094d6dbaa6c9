"""Synthetic feature visualization: activation maximization from noise (SPEC §4).

``x* = argmax_x a_j(x) − λ·R(x)`` by gradient ascent, with the regularisers of Olah et al.
2017 (Distill, "Feature Visualization"):

* the image is parameterised in a scaled Fourier basis (spectrum scaled by 1/f^decay) and,
  for RGB models, a decorrelated colour space, then squashed to valid pixels by a sigmoid;
* every step sees a randomly jittered, scaled and rotated copy (transformation robustness),
  all applied at once with one ``affine_grid`` / ``grid_sample`` per batch;
* optional total-variation penalty ``λ·TV(x)``.

The pieces have lucent's shape (STYLE.md): an :class:`Objective` (a per-image value read
from captured layer outputs, combinable with ``+`` and ``*``), a parameterisation
(:class:`FourierParam`) and a list of transforms (:class:`RandomAffine`) are small values
passed to one :func:`render`; swapping the objective or adding a regulariser is one
argument. Unlike lucent, :func:`render` optimises a whole batch at once: image ``b``
maximises unit ``units[b]`` from seed ``seeds[b]``, so one forward/backward serves every
unit × seed of a layer.

Determinism: image ``b``'s starting noise and its per-step transformations are drawn up
front from a generator seeded by ``(seeds[b], units[b])`` alone, so an image does not
depend on which other images share its batch, and renders of θ_init and θ_final with the
same seeds differ only by the weights (SPEC §4, the thesis' Fig. 3.7 comparison). The loss
is a sum over images and Adam's state is per parameter element, so every image follows its
own optimisation, exactly as if rendered alone (up to floating-point batching effects).

Speed (measured in ``bench/synthesis.py``): a render runs a private copy of the model
(cached while the weights are unchanged; the caller's module is never modified) with its
eval BatchNorms folded into their convs, weights in channels_last layout, hooks registered
once per render, the forward stopped at the objective's layer, and, when that layer is a
plain conv's output, only each image's own channel of it computed. Per-image random draws
are made up front, and progress / cancellation are checked twice a second, not every step.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import time
import weakref
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from fvaudit.engine.models.loaded import LoadedModel, ModelError
from fvaudit.engine.progress import NullReporter, Reporter, check_cancel
from fvaudit.engine.scans.activations import _StopForward, capture
from fvaudit.engine.synthesis.config import SynthesisConfig, SynthesisResult
from fvaudit.engine.synthesis.objectives import Objective, ascent_objective, measure_objective
from fvaudit.engine.synthesis.params import FourierParam
from fvaudit.engine.synthesis.transforms import RandomAffine, image_seed

#: Seconds between two progress reports / cancellation checks inside a render: a job's
#: reporter may ask the database whether it was cancelled, which must not run every step.
REPORT_EVERY_S = 0.5


def _hooks(module: torch.nn.Module, layers: Sequence[str]):
    """Forward hooks registered once for a whole render (not once per step); the forward is
    aborted once all layers are captured, and the output that ends it is not copied."""
    return capture(module, layers, stop_early=True, clone_final=False)


def _forward(module: torch.nn.Module, x: torch.Tensor, store: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    store.clear()
    try:
        module(x)
    except _StopForward:
        pass
    return dict(store)


def fold_batchnorm(module: torch.nn.Module, example: torch.Tensor, layers: Sequence[str]) -> tuple[torch.nn.Module, int]:
    """A copy of an eval-mode ``module`` with every BatchNorm that directly follows a conv
    folded into that conv's weight and bias (the BN becomes an Identity, so its name still
    captures the same tensor). Returns (module, number of folded pairs).

    Why: synthesis never updates the weights, and an eval BN is an affine map per channel,
    so its forward and backward are wasted ops (on EfficientNet about a fifth of a step).
    Pairs are found by running ``example`` up to ``layers`` (a BN whose input is a conv's
    output tensor); a conv named in ``layers`` is left alone (its own output would change
    meaning). The copy's outputs at ``layers`` are checked against the original on
    ``example``; if they differ (a conv output also used elsewhere), the original is returned.
    """
    import copy

    convs: dict[int, str] = {}
    pairs: list[tuple[str, str]] = []
    handles = []
    for name, m in module.named_modules():
        if isinstance(m, torch.nn.Conv2d):
            handles.append(m.register_forward_hook(lambda _m, _i, out, name=name: convs.__setitem__(id(out), name)))
        elif isinstance(m, torch.nn.BatchNorm2d) and m.track_running_stats and not m.training:
            handles.append(m.register_forward_hook(
                lambda _m, inp, _o, name=name: pairs.append((convs[id(inp[0])], name)) if id(inp[0]) in convs else None))
    try:
        with torch.no_grad(), _hooks(module, layers) as store:
            ref = _forward(module, example, store)
    finally:
        for h in handles:
            h.remove()
    pairs = [(c, b) for c, b in dict.fromkeys(pairs) if c not in layers]
    if not pairs:
        return module, 0
    folded = copy.deepcopy(module)
    fmods = dict(folded.named_modules())
    for cname, bname in pairs:
        conv, bn = fmods[cname], fmods[bname]
        with torch.no_grad():
            inv = 1.0 / torch.sqrt(bn.running_var + bn.eps)
            k = bn.weight * inv if bn.affine else inv
            bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
            shift = bn.bias if bn.affine else torch.zeros_like(bn.running_mean)
            conv.weight.copy_(conv.weight * k.view(-1, 1, 1, 1))
            conv.bias = torch.nn.Parameter((bias - bn.running_mean) * k + shift)
        parent, _, child = bname.rpartition(".")
        setattr(fmods[parent] if parent else folded, child, torch.nn.Identity())
    with torch.no_grad(), _hooks(folded, layers) as store:
        out = _forward(folded, example, store)
    for name in layers:
        r = ref[name]
        if not torch.allclose(out[name], r, rtol=1e-3, atol=1e-4 * max(float(r.abs().max()), 1e-12)):
            return module, 0
    return folded, len(pairs)


def _own_channel_conv(conv: torch.nn.Conv2d, x: torch.Tensor, units: torch.Tensor) -> torch.Tensor:
    """Only channel ``units[b]`` of ``conv(x)[b]``: ``[B, 1, H', W']``, one filter per image.

    Why: an own-channel objective reads one channel per image, so computing the layer's
    other C − 1 channels (and their backward) is wasted; on the demo CNN's conv3 that is
    about half of a step's arithmetic. One grouped conv, a filter per image.
    """
    b, c = x.shape[:2]
    out = F.conv2d(x.reshape(1, b * c, *x.shape[2:]), conv.weight[units],
                   None if conv.bias is None else conv.bias[units], conv.stride, conv.padding, conv.dilation, groups=b)
    return out.view(b, 1, *out.shape[2:])


def _plain_conv(m: torch.nn.Module) -> bool:
    return (type(m).forward is torch.nn.Conv2d.forward and m.groups == 1 and m.padding_mode == "zeros"
            and isinstance(m.padding, tuple))


def producing_conv(module: torch.nn.Module, layer: str, example: torch.Tensor) -> str | None:
    """The plain ``Conv2d`` whose output tensor *is* ``layer``'s output (the layer itself,
    or an Identity such as a folded BN after it), checked on ``example`` by computing two
    channels with :func:`_own_channel_conv`; None when there is none."""
    convs: dict[int, str] = {}
    handles = [m.register_forward_hook(lambda _m, _i, out, name=name: convs.__setitem__(id(out), name))
               for name, m in module.named_modules() if _plain_conv(m)]
    try:
        with torch.no_grad(), _hooks(module, [layer]) as store:
            out = _forward(module, example, store)[layer]
            name = convs.get(id(out))
    finally:
        for h in handles:
            h.remove()
    if name is None or out.dim() != 4:
        return None
    conv = dict(module.named_modules())[name]
    seen: dict[str, torch.Tensor] = {}

    def pre(_m, inp):
        seen["x"] = inp[0]
        raise _StopForward

    h = conv.register_forward_pre_hook(pre)
    try:
        with torch.no_grad():
            _forward(module, example, {})
    finally:
        h.remove()
    units = torch.tensor([0, out.shape[1] - 1])
    x = seen["x"][:1].expand(2, *seen["x"].shape[1:])
    with torch.no_grad():
        own = _own_channel_conv(conv, x, units)[:, 0]
    ref = out[:1].expand(2, *out.shape[1:])[torch.arange(2), units]
    ok = torch.allclose(own, ref, rtol=1e-4, atol=1e-5 * max(float(out.abs().max()), 1e-12))
    return name if ok else None


@dataclass
class _Prepared:
    key: tuple
    module: torch.nn.Module
    trims: dict = field(default_factory=dict)   # layer -> producing conv name or None


#: Prepared (folded) copies, one per model module, reused while its weights are unchanged
#: (a render per unit must not re-fold the model each time).
_PREPARED: "weakref.WeakKeyDictionary[torch.nn.Module, _Prepared]" = weakref.WeakKeyDictionary()


def _weights_key(module: torch.nn.Module) -> tuple:
    return tuple((t.data_ptr(), t._version, t.device.type) for t in [*module.parameters(), *module.buffers()])


def _example(model: LoadedModel, device: torch.device) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return model.normalize(torch.rand((2, *model.input_shape), generator=g)).to(device)


def _prepared(model: LoadedModel, layers: Sequence[str], device: torch.device, fold_bn: bool,
              channels_last: bool = False) -> _Prepared:
    """The render's own copy of the model (the caller's module is never modified), folded
    and/or in channels_last layout, cached while the model's weights are unchanged."""
    import copy

    module = model.module.to(device).eval()
    layers = tuple(sorted(set(layers)))
    key = (_weights_key(module), layers, fold_bn, channels_last)
    hit = _PREPARED.get(module)
    if hit is not None and hit.key == key:
        return hit
    run = fold_batchnorm(module, _example(model, device), layers)[0] if fold_bn else module
    if channels_last:
        # weights in channels_last too: measured on the demo CNN, an input-only layout
        # change does not speed up its convs and pools; converting the weights does
        run = (copy.deepcopy(run) if run is module else run).to(memory_format=torch.channels_last)
    prep = _Prepared(key, run)
    _PREPARED[module] = prep
    return prep


def synthesis_module(model: LoadedModel, layers: Sequence[str], device: torch.device, fold_bn: bool = True,
                     channels_last: bool = False) -> torch.nn.Module:
    """The module a render runs: the model in eval mode on ``device``, with its eval
    BatchNorms folded into the preceding convs (:func:`fold_batchnorm`) when ``fold_bn``,
    its weights in channels_last layout when ``channels_last``."""
    return _prepared(model, layers, device, fold_bn, channels_last).module


@contextlib.contextmanager
def _own_channel_hooks(module: torch.nn.Module, conv_name: str, layer: str, units: torch.Tensor
                       ) -> Iterator[dict[str, torch.Tensor]]:
    """Capture ``layer`` as just each image's own channel ``[B, 1, H, W]``, computed from the
    input of its producing conv, which (and everything after it) is then skipped."""
    store: dict[str, torch.Tensor] = {}

    def pre(m, inp):
        store[layer] = _own_channel_conv(m, inp[0], units)
        raise _StopForward

    h = dict(module.named_modules())[conv_name].register_forward_pre_hook(pre)
    try:
        yield store
    finally:
        h.remove()


@dataclass
class Rendered:
    """What :func:`render` returns: final pixels and the objective before/after."""

    images: torch.Tensor   # [B, C, H, W] float in [0, 1], on the CPU
    start: torch.Tensor    # [B] measured objective of the starting images
    end: torch.Tensor      # [B] measured objective of the final images


@contextlib.contextmanager
def _frozen(module: torch.nn.Module) -> Iterator[None]:
    """Model weights need no gradient during synthesis; their flags are restored after."""
    flags = [p.requires_grad for p in module.parameters()]
    module.requires_grad_(False)
    try:
        yield
    finally:
        for p, r in zip(module.parameters(), flags):
            p.requires_grad_(r)


def render(model: LoadedModel, objective: Objective, units: Sequence[int], seeds: Sequence[int], *,
           measure: Objective | None = None, param: FourierParam = FourierParam(),
           transforms: Sequence[Callable] = (RandomAffine(),), steps: int = 256, lr: float = 0.05,
           device: str | torch.device = "cpu", channels_last: bool = True, fold_bn: bool = True,
           own_channel_only: bool = True, reporter: Reporter | None = None, progress: tuple[int, int] | None = None) -> Rendered:
    """Maximise ``objective`` for a batch: image ``b`` for unit ``units[b]`` from seed ``seeds[b]``.

    ``measure`` (default: ``objective``) scores the untransformed start and final images.
    ``transforms``: values with ``draw(generator, steps) -> [steps, k]`` and
    ``__call__(x, draws[B, k]) -> x``, applied in order every step. ``fold_bn``: run a copy
    of the model with eval BatchNorms folded into their convs (same outputs, fewer ops;
    :func:`synthesis_module`). ``own_channel_only``: for an own-channel objective on a layer
    a plain conv produces, compute only each image's channel of it (:func:`_own_channel_conv`).
    ``progress``: (steps
    already done, total steps) of the enclosing job, for the reporter.
    """
    if len(units) != len(seeds) or not units:
        raise ValueError(f"render: need one seed per unit, got {len(units)} units and {len(seeds)} seeds")
    if model.normalize is None:
        raise ModelError(f"model {model.name} has no differentiable input normalisation: cannot synthesise")
    reporter = reporter or NullReporter()
    measure = measure or objective
    done0, total = progress or (0, steps)
    device = torch.device(device)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    prep = _prepared(model, (*objective.layers, *measure.layers), device, fold_bn, channels_last)
    module = prep.module
    trim = None
    if own_channel_only and objective.own_channel and len(objective.layers) == 1:
        layer = objective.layers[0]
        if layer not in prep.trims:
            prep.trims[layer] = producing_conv(module, layer, _example(model, device))
        trim = prep.trims[layer]
    gens = [torch.Generator().manual_seed(image_seed(s, u)) for s, u in zip(seeds, units)]
    img = param.build(model.input_shape, gens).to(device)
    draws = [torch.stack([t.draw(g, steps) for g in gens], 1).to(device) for t in transforms]  # [steps, B, k]
    units_t = torch.as_tensor(list(units), device=device)
    opt = torch.optim.Adam(img.parameters(), lr=lr)

    def model_input(x: torch.Tensor) -> torch.Tensor:
        return model.normalize(x).contiguous(memory_format=fmt)

    last = time.perf_counter()
    with _frozen(module):
        with torch.no_grad(), _hooks(module, measure.layers) as store:
            x0 = img()
            start = measure(_forward(module, model_input(x0), store), x0, units_t).float().cpu()
        # a trimmed capture holds each image's own channel only: index 0 of it
        obj_units = units_t if trim is None else torch.zeros_like(units_t)
        capture = (_hooks(module, objective.layers) if trim is None
                   else _own_channel_hooks(module, trim, objective.layers[0], units_t))
        with capture as store:
            for step in range(steps):
                x = img()
                for t, d in zip(transforms, draws):
                    x = t(x, d[step])
                value = objective(_forward(module, model_input(x), store), x, obj_units)
                opt.zero_grad(set_to_none=True)
                (-value.sum()).backward()
                opt.step()
                now = time.perf_counter()
                if now - last >= REPORT_EVERY_S or step == steps - 1:
                    last = now
                    check_cancel(reporter)
                    reporter.advance(done0 + step + 1, total, activation=float(value.detach().mean()))
        with torch.no_grad(), _hooks(module, measure.layers) as store:
            final = img()
            end = measure(_forward(module, model_input(final), store), final, units_t).float().cpu()
    return Rendered(final.detach().cpu(), start, end)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """[B, C, H, W] floats in [0, 1] → [B, H, W, C] uint8 (the stored form of an image)."""
    return (images.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy()


# ------------------------------------------------------------------ public functions

def batch_size(cfg: SynthesisConfig, input_shape: Sequence[int]) -> int:
    """Images per optimisation batch: ``cfg.batch_units``, capped on a CPU by
    ``cfg.cpu_pixels_per_batch`` (see :class:`SynthesisConfig`)."""
    b = cfg.batch_units
    if torch.device(cfg.device).type == "cpu" and cfg.cpu_pixels_per_batch > 0:
        b = min(b, max(1, cfg.cpu_pixels_per_batch // (int(input_shape[-1]) * int(input_shape[-2]))))
    return b


def synthesize_many(model: LoadedModel, layer: str, units: Sequence[int] | None, seeds: Sequence[int],
                    cfg: SynthesisConfig | None = None, reporter: Reporter | None = None) -> list[SynthesisResult]:
    """``n_synth = len(seeds)`` images per unit: one :class:`SynthesisResult` per seed.

    All units × seeds are rendered together in batches of :func:`batch_size` images.
    Each image depends only on (seed, unit, cfg) and the weights, so θ_init and θ_final
    renders with the same seeds differ only by the weights (SPEC §4), and a result equals
    ``synthesize`` with ``cfg.seed = seed`` (up to floating-point batching effects).
    """
    cfg = cfg or SynthesisConfig()
    cfg.validate()
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("seeds: need at least one seed")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds: must be distinct, got {seeds}")
    reporter = reporter or NullReporter()
    if model.normalize is None:
        raise ModelError(f"model {model.name} has no differentiable input normalisation: cannot synthesise")
    info = model.layer(layer)
    units = model.check_units(info.name, units)
    objective = ascent_objective(model, info.name, cfg)
    measure = measure_objective(info.name, cfg.objective)
    param = FourierParam(cfg.decay)
    transforms = (RandomAffine(cfg.jitter, tuple(cfg.scale), cfg.rotate_deg),)
    pairs = [(s, u) for s in seeds for u in units]  # seed-major: results split by seed
    batch = batch_size(cfg, model.input_shape)
    chunks = [pairs[i : i + batch] for i in range(0, len(pairs), batch)]
    total = cfg.steps * len(chunks)
    reporter.stage(f"synthesise {info.name}", total=total)
    t0 = time.perf_counter()
    images, start, end = [], [], []
    for ci, chunk in enumerate(chunks):
        out = render(model, objective, [u for _, u in chunk], [s for s, _ in chunk], measure=measure, param=param,
                     transforms=transforms, steps=cfg.steps, lr=cfg.lr, device=cfg.device,
                     channels_last=cfg.channels_last, fold_bn=cfg.fold_bn,
                     own_channel_only=cfg.own_channel_only, reporter=reporter, progress=(ci * cfg.steps, total))
        images.append(to_uint8(out.images))
        start.append(out.start.numpy())
        end.append(out.end.numpy())
    seconds = (time.perf_counter() - t0) / len(seeds)
    images_all, start_all, end_all = np.concatenate(images), np.concatenate(start), np.concatenate(end)
    h, w = model.input_shape[1:]
    results = []
    for i, s in enumerate(seeds):
        sl = slice(i * len(units), (i + 1) * len(units))
        conf = dataclasses.asdict(dataclasses.replace(cfg, seed=s))
        conf["size"] = [h, w]
        results.append(SynthesisResult(info.name, list(units), images_all[sl], end_all[sl], start_all[sl], seconds,
                                       conf, objective=cfg.objective, seed=s, steps=cfg.steps, size=(h, w)))
    return results


def synthesize(model: LoadedModel, layer: str, units: Sequence[int] | None = None,
               cfg: SynthesisConfig | None = None, reporter: Reporter | None = None) -> SynthesisResult:
    """One synthetic image per unit of ``layer`` (all units when ``units`` is None), seed ``cfg.seed``."""
    cfg = cfg or SynthesisConfig()
    return synthesize_many(model, layer, units, [cfg.seed], cfg, reporter)[0]


def score_images(model: LoadedModel, layer: str, units: Sequence[int], images: torch.Tensor,
                 objective: str = "score", device: str | torch.device = "cpu", batch_size: int = 64) -> np.ndarray:
    """The measured objective (``a_j`` or channel mean) of image ``b`` for unit ``units[b]``.

    ``images``: [B, C, H, W] pixels in [0, 1] at the model's input size; they go through
    ``model.normalize`` exactly as synthesis feeds them. Returns float64 [B].
    """
    if model.normalize is None:
        raise ModelError(f"model {model.name} has no differentiable input normalisation")
    info = model.layer(layer)
    measure = measure_objective(info.name, objective)
    if images.shape[0] != len(units):
        raise ValueError(f"images: {images.shape[0]} images but {len(units)} units")
    module = model.module.to(device).eval()
    out = []
    with torch.no_grad(), _hooks(module, measure.layers) as store:
        for i in range(0, len(units), batch_size):
            x = images[i : i + batch_size].to(device)
            u = torch.as_tensor(list(units[i : i + batch_size]), device=device)
            out.append(measure(_forward(module, model.normalize(x), store), x, u).double().cpu())
    return torch.cat(out).numpy()


def save_grid(images: np.ndarray, path, labels: Sequence[str] | None = None, cell: int = 112, cols: int = 8) -> None:
    """A PNG contact sheet of synthetic images (nearest upscaling keeps small images crisp)."""
    from PIL import Image, ImageDraw

    n = len(images)
    cols = min(cols, n)
    rows = math.ceil(n / cols)
    pad = 14 if labels else 0
    sheet = Image.new("RGB", (cols * cell, rows * (cell + pad)), "white")
    draw = ImageDraw.Draw(sheet)
    for i, arr in enumerate(images):
        im = Image.fromarray(arr.squeeze(-1) if arr.shape[-1] == 1 else arr).convert("RGB")
        im = im.resize((cell, cell), Image.NEAREST)
        x, y = (i % cols) * cell, (i // cols) * (cell + pad)
        sheet.paste(im, (x, y))
        if labels:
            draw.text((x + 2, y + cell), str(labels[i]), fill="black")
    sheet.save(path)
