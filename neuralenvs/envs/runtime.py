"""How a world model runs while it dreams on this hardware: its precision and, optionally, its
compiled modules.

Neither changes what a model is or what its checkpoint holds: :func:`dreaming` sets eval mode,
no-grad and (for ``"bf16"``) autocast around a dream's calls; :func:`compile_for_dreaming` hands the
modules a family names (:meth:`WorldModel.compiled_modules`) to ``torch.compile``, in place, and
falls back to eager if that fails on this machine (no C++ compiler, an unsupported backend).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

import torch

from neuralenvs.utils.device import has_fast_bf16
from neuralenvs.world_model import WorldModel

PRECISIONS = ("fp32", "bf16", "auto")
# bf16 where the hardware runs it natively: the shipped dreams' PSNR at steps 1 to 50 moves by at
# most 0.2 dB from fp32's, and they dream 1.1 to 2 times as fast at batch 16 to 256 on a 2-core
# EPYC with AVX-512 bf16; on a CPU, not below the family's ``WorldModel.cpu_bf16_min_batch`` (token
# and genie dreams, whose steps are many small operations, ran as fast or faster in fp32 below 32
# and 16 dreams; docs/speed_levers.md, "Which precision pays")
DEFAULT_PRECISION = "auto"

# torch.compile's modes; True means "default"
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
# compiles of one module's forward code that torch keeps (its default, 8, is shared by every model of
# a class: a process that dreams three checkpoints at five batch sizes would silently send the
# later ones back to eager)
COMPILES_KEPT = 64


def resolve_precision(precision: str, device: torch.device, batch_size: int | None = None,
                      cpu_bf16_min_batch: int = 1) -> str:
    """``"fp32"`` or ``"bf16"``: ``precision`` itself, or for ``"auto"`` bf16 where ``device`` runs
    it natively, unless ``device`` is a CPU and ``batch_size`` dreams are fewer than
    ``cpu_bf16_min_batch``."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "auto":
        too_few = device.type == "cpu" and batch_size is not None and batch_size < cpu_bf16_min_batch
        return "bf16" if has_fast_bf16(device) and not too_few else "fp32"
    return precision


@contextlib.contextmanager
def dreaming(model: WorldModel, precision: str = "fp32") -> Iterator[None]:
    """Inference without autograd and in eval mode (no dropout, batch-norm running statistics),
    restoring the model's mode afterwards: a trainer may alternate training the world model and
    dreaming with it, as DIAMOND does. ``"bf16"`` runs the model under bf16 autocast (weights stay
    fp32), which pays on CPUs with AMX or AVX-512 bf16 and on GPUs."""
    training = model.training
    if training:
        model.eval()
    try:
        with torch.no_grad(), torch.autocast(model.device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            yield
    finally:
        if training:
            model.train()


def compile_mode(compile: bool | str) -> str | None:
    """The ``torch.compile`` mode that a ``compile`` argument asks for (``None``: do not compile)."""
    if compile is False or compile is None:
        return None
    if compile is True:
        return "default"
    if compile not in COMPILE_MODES:
        raise ValueError(f"compile must be True, False or one of {COMPILE_MODES}, got {compile!r}")
    return compile


def compile_for_dreaming(
    model: WorldModel, batch_size: int, precision: str = "fp32", compile: bool | str = True
) -> bool:
    """Compile ``model.compiled_modules()`` in place for dreams of ``batch_size`` at ``precision``
    (``compile``: ``True``, a ``torch.compile`` mode, or ``False`` to leave the model as it is),
    and compile them now, with one dream step on random frames, so that a failure shows here and
    not in the middle of training: on failure the modules are put back as they were, a warning
    says why, and the model dreams eagerly. Returns whether the model now dreams compiled.

    The first compile of a shape takes tens of seconds on a CPU (half a minute for a shipped
    diffusion dream on 2 cores); torch keeps what it compiled on disk, so the next process takes a
    few. Each new batch size compiles again. The compiled modules compute what the eager ones do, up to the
    rounding of fused operations (a few pixels of a dreamed frame may differ by one level)."""
    mode = compile_mode(compile)  # a clear error for a mode torch does not know
    modules = model.compiled_modules()
    if mode is None or not modules:
        return False
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, COMPILES_KEPT)
    for module in modules:
        if not is_compiled(module):  # compiled for another batch size already: it compiles this one too
            # an instance attribute shadows the class's forward, and deleting it restores it; the
            # parameters and the state dict stay the module's own
            module.forward = torch.compile(module.forward, mode=mode, dynamic=False)
    try:
        _trial_step(model, batch_size, precision)
    except Exception as error:  # noqa: BLE001 (any backend failure falls back to eager)
        for module in modules:
            if is_compiled(module):
                del module.forward
        warnings.warn(
            f"torch.compile failed here, so the dream runs without it ({type(error).__name__}: "
            f"{str(error).strip().splitlines()[0] if str(error).strip() else 'no message'})",
            RuntimeWarning,
            stacklevel=2,
        )
        return False
    return True


def is_compiled(module: torch.nn.Module) -> bool:
    """Whether :func:`compile_for_dreaming` compiled ``module`` (and it was not undone)."""
    return "forward" in vars(module)


def _trial_step(model: WorldModel, batch_size: int, precision: str) -> None:
    h, w, c = model.obs_shape
    k = model.context_frames
    g = torch.Generator(device=model.device).manual_seed(0)
    frames = torch.randint(0, 256, (batch_size, k, h, w, c), dtype=torch.uint8, device=model.device, generator=g)
    actions = torch.randint(0, model.num_actions, (batch_size, k), device=model.device, generator=g)
    with dreaming(model, precision):
        state = model.init_state(frames, actions[:, : k - 1])
        model.step(state, actions[:, -1], g)
