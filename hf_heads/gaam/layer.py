"""Multi-head Gaussian Adaptive Attention (GAAM), Ioannides et al., arXiv 2401.11143.

This file depends on torch alone: model folders saved for `trust_remote_code=True` carry it beside their
modelling code, so a colleague without `hf_heads` installed can load them.

On CPU, float32/float64 inputs go through a fused kernel (`gaam_kernel.cpp` beside this file's resolved path), built
with the system's C++ compiler on first use and cached; the same math in a few passes over memory. Wherever it cannot
serve (no compiler, no source beside this file as in saved model folders, another device or dtype, `return_weights`,
`torch.compile` tracing, `HF_HEADS_GAAM_KERNEL=0`), the exact PyTorch path below computes the same result.

Semantics (those of the reference package `gaussian-adaptive-attention`), per head, along the normalised axis:

    mean, var = mean(x), var(x, unbiased) + eps
    y_g       = (x - (mean + mean_offsets[g])) / sqrt(var)
    w         = prod_g N(y_g; 0, c[g]^2)
    w         = w / max(sum(w), eps)
    out       = x * w

That last normalisation makes the weights average 1/n over a head's n elements, so `out` is about x / n. Two
scale-preserving variants (`normalization`): "mean" scales the weights to average 1 over the head's real elements,
"none" uses the density divided by its peak value as a gate in (0, 1], as the authors' own PEFT head does.

A product of Gaussians is a single Gaussian, so the loop over G collapses. With precisions p_g = 1 / c_g^2,
P = sum p_g, A = sum p_g o_g and Q = sum p_g o_g^2 (o = mean_offsets, s = sqrt(var)):

    log w = -P / 2 * ((x - mean - A / P) / s)^2  -  (Q - A^2 / P) / (2 s^2)  +  log_norm

where log_norm = -G/2 log(2 pi) - sum_g log|c_g|. The normalisation is a log-sum-exp. Computed this way the
cost does not grow with G, and nothing underflows where the reference's product of densities does. The density's
peak (over x) is exp(log_norm - (Q - A^2 / P) / (2 s^2)), so the peak-1 gate of "none" is exp of the first term.
"""

import ctypes
import hashlib
import math
import os
import platform
import subprocess
import tempfile
import warnings
from pathlib import Path

import torch
from torch import nn
from torch.autograd.function import once_differentiable


NORMALIZATIONS = ("sum", "mean", "none")


def _check_positive_int(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")


def head_parameters(c: torch.Tensor, offsets: torch.Tensor):
    """Per-head (total precision P, shift A / P, spread D = Q - A^2 / P, log_norm) of Gaussians with scales `c` and
    mean offsets `offsets`, both (heads, gaussians): the product of a head's Gaussians in closed form."""
    precision = c.pow(-2)
    total_precision = precision.sum(-1)
    shift = (precision * offsets).sum(-1) / total_precision
    spread_of_offsets = (precision * offsets.square()).sum(-1) - total_precision * shift.square()
    log_norm = -0.5 * c.shape[-1] * math.log(2 * math.pi) - c.abs().log().sum(-1)
    return total_precision, shift, spread_of_offsets, log_norm


def head_parameters_backward(c, offsets, grad_total_precision, grad_shift, grad_spread, grad_log_norm):
    """Gradients of `c` and `offsets` from those of `head_parameters`' four outputs (hand-derived, for the fused path;
    the exact path differentiates `head_parameters` with autograd, and tests hold the two together).

    With p = c^-2, P = sum p, s = sum(p o) / P, D = sum(p o^2) - P s^2:
    dP/dp = 1, ds/dp = (o - s) / P, dD/dp = (o - s)^2, ds/do = p / P, dD/do = 2 p (o - s), d log_norm / dc = -1 / c.
    """
    precision = c.pow(-2)
    total_precision = precision.sum(-1, keepdim=True)
    shift = (precision * offsets).sum(-1, keepdim=True) / total_precision
    deviation = offsets - shift
    grad_shift, grad_spread = grad_shift.unsqueeze(-1), grad_spread.unsqueeze(-1)
    grad_precision = grad_total_precision.unsqueeze(-1) + grad_shift * deviation / total_precision
    grad_precision = grad_precision + grad_spread * deviation.square()
    grad_c = -(2 * grad_precision * precision + grad_log_norm.unsqueeze(-1)) / c
    grad_offsets = precision * (grad_shift / total_precision + 2 * grad_spread * deviation)
    return grad_c, grad_offsets


class _Blocks:
    """Heads as contiguous equal-size blocks of the normalised axis: a reshape, plain reductions, broadcasting."""

    def __init__(self, x: torch.Tensor, axis: int, num_heads: int):
        size = x.shape[axis] // num_heads
        self.shape = x.shape[:axis] + (num_heads, size) + x.shape[axis + 1 :]
        self.head_shape = (num_heads,) + (1,) * (x.dim() - axis)
        self.reduce_dim = axis + 1
        self.count = size
        self.bessel = size - 1  # at least 1: sizes are checked before

    def per_head(self, values: torch.Tensor) -> torch.Tensor:
        return values.reshape(self.head_shape)

    def sum(self, v: torch.Tensor) -> torch.Tensor:
        return v.sum(self.reduce_dim, keepdim=True)

    def amax(self, v: torch.Tensor) -> torch.Tensor:
        return v.amax(self.reduce_dim, keepdim=True)

    def spread(self, stats: torch.Tensor) -> torch.Tensor:
        return stats


class _Buckets:
    """Heads as index buckets along the last axis (scatter/gather), for masks that vary along the normalised axis.

    Each row splits *its own* valid positions into heads, so a row's result does not depend on its padding or
    its batch-mates. Padded positions go to an extra bucket (index `num_heads`) whose result is discarded.
    """

    def __init__(self, valid: torch.Tensor, row_shape: torch.Size, num_heads: int):
        rank = valid.cumsum(-1) - 1
        num_valid = valid.sum(-1, keepdim=True)
        # Rows shorter than 2 * num_heads cannot give every head two positions; heads then take one position each
        # (a head over one position gives it weight 1) rather than failing on data the user cannot control.
        chunk = torch.div(num_valid, num_heads, rounding_mode="floor").clamp(min=1)
        head = torch.div(rank, chunk, rounding_mode="floor").clamp(max=num_heads - 1)
        head = torch.where(valid, head, num_heads)
        self.index = head.expand(row_shape)
        self.stats_shape = row_shape[:-1] + (num_heads + 1,)
        count = head.new_zeros(head.shape[:-1] + (num_heads + 1,)).scatter_add(-1, head, torch.ones_like(head))
        self.count = count.clamp(min=1)
        self.bessel = (count - 1).clamp(min=1)

    def per_head(self, values: torch.Tensor) -> torch.Tensor:
        # The padding bucket gets neutral parameters; its result is discarded.
        return torch.cat([values, values.new_ones(1)])

    def sum(self, v: torch.Tensor) -> torch.Tensor:
        return v.new_zeros(self.stats_shape).scatter_add(-1, self.index, v)

    def amax(self, v: torch.Tensor) -> torch.Tensor:
        return v.new_zeros(self.stats_shape).scatter_reduce(-1, self.index, v, reduce="amax", include_self=False)

    def spread(self, stats: torch.Tensor) -> torch.Tensor:
        return stats.expand(self.stats_shape).gather(-1, self.index)


class _GaussianWeights(torch.autograd.Function):
    """GAAM weights of `x` for heads laid out by `segments`, with a hand-written backward.

    Inputs per head (shaped by `segments.per_head`): total precision P, shift A / P, spread D = Q - A^2 / P and
    log_norm. With mean m, centred c = x - m, variance v, scale a = sqrt(P / (2 v)), z = (c - A / P) a:

        log density = k - z^2,   k = log_norm - D / (2 v)

    "none" returns exp(-z^2) (the density over its peak exp(k)); "sum" and "mean" normalise exp(-z^2) per head,
    where k cancels except under the reference's eps floor ("sum" only).

    Autograd through those few lines records ~25 full-size ops; the backward below needs ~10, which is most of
    the op's speed on CPU.
    """

    @staticmethod
    def forward(ctx, x, total_precision, shift, spread_of_offsets, log_norm, segments, eps, normalization):
        mean = segments.sum(x) / segments.count
        centered = x - segments.spread(mean)
        var = segments.sum(centered.square()) / segments.bessel + eps
        scale = (0.5 * total_precision / var).sqrt()
        z = torch.addcmul(segments.spread(-shift * scale), centered, segments.spread(scale))
        q = z.square()
        clamped = None
        if normalization == "none":
            weights = q.neg_().exp_()
        else:
            # Normalise around each head's peak so nothing overflows or underflows: e = exp(peak - q), sum e >= 1.
            peak = -segments.amax(-q)
            unnormalised = (segments.spread(peak) - q).exp_()
            normal = segments.sum(unnormalised).reciprocal()
            if normalization == "mean":
                factor = normal * segments.count
            else:
                # The reference's `w / max(sum w, eps)` is `e * min(1 / sum e, exp(k - peak) / eps)`, and
                # exp(k - peak) can only underflow to 0.
                k = log_norm - 0.5 * spread_of_offsets / var
                floored = (k - peak).exp() / eps
                clamped = floored < normal
                factor = torch.where(clamped, floored, normal)
            weights = unnormalised.mul_(segments.spread(factor))
        ctx.segments = segments
        ctx.normalization = normalization
        ctx.save_for_backward(centered, z, weights, scale, var, total_precision, spread_of_offsets, clamped)
        return weights

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_weights):
        segments = ctx.segments
        centered, z, weights, scale, var, total_precision, spread_of_offsets, clamped = ctx.saved_tensors
        # w = e * factor with e = exp(peak - q): softmax backward where the factor depends on q (1 / sum e for "sum"
        # without its floor, n / sum e for "mean"), w = exp(k - q) / eps where the floor is active, w = exp(-q) for
        # "none".
        beta = segments.sum(grad_weights * weights)
        grad_k = torch.zeros_like(beta)
        if ctx.normalization == "sum":
            grad_k = beta.masked_fill(~clamped, 0.0)
            beta = beta.masked_fill(clamped, 0.0)
        elif ctx.normalization == "mean":
            beta = beta / segments.count
        else:
            beta = torch.zeros_like(beta)
        grad_q = (segments.spread(beta) - grad_weights).mul_(weights)
        grad_z = grad_q.mul_(z).mul_(2.0)
        grad_scale = segments.sum(grad_z * z) / scale
        grad_shift = -scale * segments.sum(grad_z)
        grad_var = (spread_of_offsets * grad_k / var - scale * grad_scale) / (2 * var)
        grad_centered = torch.addcmul(
            grad_z.mul_(segments.spread(scale)), centered, segments.spread(2 * grad_var / segments.bessel)
        )
        grad_x = grad_centered - segments.spread(segments.sum(grad_centered) / segments.count)

        def per_head(grad, like):
            return grad.sum_to_size(like.shape)

        return (
            grad_x,
            per_head(grad_scale * scale / (2 * total_precision), total_precision),
            per_head(grad_shift, total_precision),
            per_head(-grad_k / (2 * var), spread_of_offsets),
            per_head(grad_k, total_precision),
            None,
            None,
            None,
        )


def gaussian_weights(
    x, segments, total_precision, shift, spread_of_offsets, log_norm, eps: float, normalization: str
) -> torch.Tensor:
    """GAAM weights of `x`, heads laid out by `segments`; parameters are per-head vectors."""
    per_head = (segments.per_head(p) for p in (total_precision, shift, spread_of_offsets, log_norm))
    return _GaussianWeights.apply(x, *per_head, segments, eps, normalization)


# ---- The fused CPU kernel (optional: every input it does not serve takes the exact path above). ----

_KERNEL_SOURCE = Path(__file__).resolve().parent / "gaam_kernel.cpp"
# No fused multiply-add contraction: it rounds z^2 differently in `peak - z^2` than in `peak`, which a saturated head
# amplifies; without it the kernel rounds as the exact path does.
_KERNEL_FLAGS = ["-O3", "-march=native", "-ffp-contract=off", "-fopenmp", "-fno-math-errno", "-fno-trapping-math",
                 "-std=c++17"]
_KERNEL_DTYPES = {torch.float32: "f32", torch.float64: "f64"}
_MODES = {"sum": 0, "mean": 1, "none": 2}
_STATS, _PARAM_GRADS = 5, 4  # per-segment values the kernel saves for, and returns from, the backward
_GRAIN_SIZE = 32768  # elements per thread, as in PyTorch's own CPU kernels: a small input is not worth a thread team
_MAX_LENGTH = 16384  # of the normalised axis: bounds the kernel's per-thread scratch (length x up to 64 columns x 5)
_kernel = None  # the loaded library, False once it is known to be unavailable


def _cpu_signature() -> str:
    # `-march=native` code must not be reused on a CPU with fewer instruction sets (a shared home directory).
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        flags = platform.processor()
    return f"{platform.machine()} {flags}"


def _build_kernel(source: Path | None = None) -> ctypes.CDLL:
    """Build (once per source, compiler and CPU: cached by their hash) and load the kernel from `source` (by default
    the one beside this file)."""
    source = source or _KERNEL_SOURCE
    compiler = os.environ.get("CXX", "c++")
    build = [source.read_bytes(), " ".join([compiler, *_KERNEL_FLAGS]).encode(), _cpu_signature().encode()]
    key = hashlib.sha256(b"\0".join(build)).hexdigest()[:16]
    cache = Path(os.environ.get("HF_HEADS_CACHE", Path.home() / ".cache" / "hf_heads")) / "kernels"
    library = cache / f"gaam_kernel-{key}.so"
    if not library.exists():
        cache.mkdir(parents=True, exist_ok=True)
        # Build beside the target and rename: processes that build at once (data-parallel ranks) never load a
        # half-written library.
        with tempfile.TemporaryDirectory(dir=cache) as build:
            target = Path(build) / library.name
            command = [compiler, *_KERNEL_FLAGS, "-shared", "-fPIC", str(source), "-o", str(target)]
            subprocess.run(command, check=True, capture_output=True, timeout=600)
            os.replace(target, library)
    kernel = ctypes.CDLL(str(library))
    pointer, size = ctypes.c_void_p, ctypes.c_int64
    kernel.gaam_tile_columns.argtypes, kernel.gaam_tile_columns.restype = [], size
    for suffix in _KERNEL_DTYPES.values():
        getattr(kernel, f"gaam_forward_{suffix}").argtypes = [pointer] * 4 + [size] * 4 + [pointer, size] * 2 + [
            pointer, ctypes.c_double, ctypes.c_int, ctypes.c_int]
        getattr(kernel, f"gaam_backward_{suffix}").argtypes = [pointer] * 6 + [size] * 4 + [pointer, size] * 2 + [
            pointer, ctypes.c_int, ctypes.c_int]
    return kernel


def _fused_kernel():
    """The loaded kernel library, or None where it is unavailable (the reason is warned about once)."""
    global _kernel
    if _kernel is None:
        _kernel = False
        if os.environ.get("HF_HEADS_GAAM_KERNEL", "1") == "0":
            return None
        try:
            _kernel = _build_kernel()
        except (OSError, subprocess.SubprocessError) as error:
            detail = getattr(error, "stderr", b"") or b""
            warnings.warn(
                f"GAAM's fused CPU kernel is unavailable ({error} {detail.decode(errors='replace')[-500:]}); "
                "using the exact PyTorch path, which gives the same results more slowly.",
                stacklevel=3,
            )
    return _kernel or None


def _threads_for(x: torch.Tensor) -> int:
    return max(1, min(torch.get_num_threads(), x.numel() // _GRAIN_SIZE))


def _fused_kernel_serves(x: torch.Tensor) -> bool:
    return (
        x.device.type == "cpu"
        and x.dtype in _KERNEL_DTYPES
        and not torch.compiler.is_compiling()
        and _KERNEL_SOURCE.is_file()
        and _fused_kernel() is not None
    )


class _FusedLayout:
    """How heads tile a contiguous (outer, length, inner) input, in the kernel's terms.

    Each outer row b splits ranks [starts[b, h], starts[b, h + 1]) of its position list into head h (the identity
    when `positions` is None; else the row's real positions first); ranks from starts[b, H] on are padding. Rows
    whose `row_valid` is 0 pass through.
    """

    def __init__(self, shape, axis: int, num_heads: int, starts, positions=None, row_valid=None):
        self.outer = math.prod(shape[:axis])
        self.length = shape[axis]
        self.inner = math.prod(shape[axis + 1 :])
        self.num_heads = num_heads
        self.starts = starts.contiguous()
        self.positions = None if positions is None else positions.contiguous()
        self.row_valid = None if row_valid is None else row_valid.to(torch.uint8).contiguous()

    def arguments(self):
        def pointer(tensor):
            return None if tensor is None else tensor.data_ptr()

        def row_stride(tensor):
            return 0 if tensor is None or tensor.dim() == 1 else tensor.shape[-1]

        return (
            self.outer, self.length, self.inner, self.num_heads,
            pointer(self.positions), row_stride(self.positions),
            pointer(self.starts), row_stride(self.starts),
            pointer(self.row_valid),
        )  # fmt: skip


class _FusedGaussianAttention(torch.autograd.Function):
    """`x * weights` (padding passed through) and its backward, by the fused kernel; the math of `_GaussianWeights`."""

    @staticmethod
    def forward(ctx, x, c, offsets, layout, eps, normalization):
        kernel, suffix = _fused_kernel(), _KERNEL_DTYPES[x.dtype]
        # The per-head parameters, and their backward by hand: through autograd their ~30 small ops took 0.22 ms a
        # call (0.08 ms by hand), a few percent of the op at (8, 512, 768) and more on small inputs.
        parameters = torch.stack(head_parameters(c, offsets)).contiguous()
        output = torch.empty_like(x)
        stats = x.new_empty(layout.outer, layout.num_heads, _STATS, layout.inner)
        getattr(kernel, f"gaam_forward_{suffix}")(
            x.data_ptr(), output.data_ptr(), stats.data_ptr(), parameters.data_ptr(), *layout.arguments(),
            eps, _MODES[normalization], _threads_for(x),
        )  # fmt: skip
        ctx.layout, ctx.normalization = layout, normalization
        ctx.save_for_backward(x, stats, parameters, c, offsets)
        return output

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        x, stats, parameters, c, offsets = ctx.saved_tensors
        layout, suffix = ctx.layout, _KERNEL_DTYPES[x.dtype]
        grad_output = grad_output.contiguous()
        grad_x = torch.empty_like(x)
        # Summed by the kernel over each tile of columns (one tile where the axis is the last).
        tiles = -(-layout.inner // _fused_kernel().gaam_tile_columns())
        param_grads = x.new_empty(layout.outer, layout.num_heads, tiles, _PARAM_GRADS)
        getattr(_fused_kernel(), f"gaam_backward_{suffix}")(
            x.data_ptr(), grad_output.data_ptr(), grad_x.data_ptr(), stats.data_ptr(), parameters.data_ptr(),
            param_grads.data_ptr(), *layout.arguments(), _MODES[ctx.normalization], _threads_for(x),
        )  # fmt: skip
        grad_c, grad_offsets = head_parameters_backward(c, offsets, *param_grads.sum((0, 2)).unbind(-1))
        return grad_x, grad_c, grad_offsets, None, None, None


class GaussianAdaptiveAttention(nn.Module):
    r"""
    Multi-head Gaussian adaptive attention along one axis of its input.

    Args:
        num_heads (`int`):
            Number of heads. The normalised axis is split into `num_heads` contiguous chunks of `size // num_heads`
            elements, the last head taking the rest; every chunk must hold at least 2 elements.
        num_gaussians (`int`):
            Number of Gaussians whose product weighs each head's elements.
        norm_axis (`int`):
            The axis along which statistics and weights are computed (for `(batch, seq, hidden)` inputs: `1` for
            the sequence, `-1` for the features).
        eps (`float`, *optional*, defaults to 1e-8):
            Added to the variance, and the floor of the normalising sum of "sum" (as in the reference).
        normalization (`str`, *optional*, defaults to `"sum"`):
            How each head's Gaussian density becomes weights:
            - `"sum"`: divided by its sum over the head's elements, floored at `eps` (the reference). Weights average
              1/n over a head of n elements, so the output is about `x / n`.
            - `"mean"`: scaled to average 1 over the head's real (unpadded) elements; keeps the input's scale.
            - `"none"`: the density divided by its peak value, a gate in (0, 1] (the authors' PEFT head).
            A row whose positions are all padding passes through unchanged in every mode.

    Parameters `mean_offsets` and `c` have shape `(num_heads, num_gaussians)`: row `h` holds the reference's
    per-head `mean_offsets` and `c`.
    """

    def __init__(
        self, num_heads: int, num_gaussians: int, norm_axis: int, eps: float = 1e-8, normalization: str = "sum"
    ):
        super().__init__()
        _check_positive_int("num_heads", num_heads)
        _check_positive_int("num_gaussians", num_gaussians)
        if isinstance(norm_axis, bool) or not isinstance(norm_axis, int):
            raise ValueError(f"`norm_axis` must be an integer axis index, got {norm_axis!r}.")
        if not (isinstance(eps, (int, float)) and eps > 0):
            raise ValueError(f"`eps` must be a positive number, got {eps!r}.")
        if normalization not in NORMALIZATIONS:
            raise ValueError(
                f"`normalization` must be one of {', '.join(repr(n) for n in NORMALIZATIONS)}, got {normalization!r}."
            )
        self.num_heads = num_heads
        self.num_gaussians = num_gaussians
        self.norm_axis = norm_axis
        self.eps = float(eps)
        self.normalization = normalization
        self.mean_offsets = nn.Parameter(torch.zeros(num_heads, num_gaussians))
        self.c = nn.Parameter(torch.randn(num_heads, num_gaussians))

    def extra_repr(self) -> str:
        return (
            f"num_heads={self.num_heads}, num_gaussians={self.num_gaussians}, norm_axis={self.norm_axis}, "
            f"eps={self.eps}, normalization={self.normalization!r}"
        )

    def _axis(self, x: torch.Tensor) -> int:
        if not -x.dim() <= self.norm_axis < x.dim():
            raise ValueError(
                f"`norm_axis`={self.norm_axis} is out of range for an input with {x.dim()} dimensions "
                f"(accepted: {-x.dim()} to {x.dim() - 1})."
            )
        return self.norm_axis % x.dim()

    def _check_size(self, size: int, axis: int) -> None:
        if size // self.num_heads < 2:
            raise ValueError(
                f"`num_heads`={self.num_heads} splits axis {axis} of size {size} into chunks of "
                f"{size // self.num_heads} element(s); each head needs at least 2, so use at most "
                f"{max(size // 2, 1)} heads or a longer axis."
            )

    def _valid_positions(self, x: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if x.dim() < 2 or attention_mask.shape != x.shape[:2]:
            raise ValueError(
                f"`attention_mask` must have shape (batch, sequence) = {tuple(x.shape[:2])} matching the input's "
                f"first two axes, got {tuple(attention_mask.shape)}."
            )
        return attention_mask.to(torch.bool).reshape(attention_mask.shape + (1,) * (x.dim() - 2))

    def _head_parameters(self, dtype: torch.dtype, heads: slice = slice(None)):
        return head_parameters(self.c[heads].to(dtype), self.mean_offsets[heads].to(dtype))

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor | None = None, return_weights: bool = False):
        """
        Args:
            x: input of any shape with at least one axis.
            attention_mask: optional `(batch, sequence)` mask over `x`'s first two axes, 1 for real positions and 0
                for padding. Padded positions are left out of the means, variances and normalisation, and are
                returned unchanged (their weights are 0).
            return_weights: also return the Gaussian weights (see `normalization`), shaped like `x`.
        """
        axis = self._axis(x)
        valid = None if attention_mask is None else self._valid_positions(x, attention_mask)
        compute_dtype = torch.promote_types(x.dtype, torch.float32)
        x_compute = x.to(compute_dtype)
        size = x.shape[axis]

        # The fused kernel returns the output only; weights come from the exact path.
        layout = None if return_weights else self._fused_layout(x_compute, axis, attention_mask)
        if layout is not None:
            output = _FusedGaussianAttention.apply(
                x_compute.contiguous(), self.c.to(compute_dtype), self.mean_offsets.to(compute_dtype), layout,
                self.eps, self.normalization,
            )  # fmt: skip
            return output.to(x.dtype)

        x_real = x_compute
        if valid is not None:
            # Padding never enters the weights' arithmetic, not even as a 0 factor: a NaN or inf there would otherwise
            # turn the backward's 0 * value into NaN. Padded positions pass through unchanged (below).
            x_real = x_compute.masked_fill(~valid, 0.0)
        if valid is None or axis >= attention_mask.dim():
            # Every row splits the axis the same way: fast contiguous blocks (the last head takes the rest).
            self._check_size(size, axis)
            weights = self._block_weights(x_real, axis)
        else:
            x_last = x_real.movedim(axis, -1)
            segments = _Buckets(valid.movedim(axis, -1), x_last.shape, self.num_heads)
            heads = self._head_parameters(compute_dtype)
            weights = gaussian_weights(x_last, segments, *heads, self.eps, self.normalization).movedim(-1, axis)

        if valid is not None:
            weights = weights.masked_fill(~valid, 0.0)
            output = torch.where(valid, x_real * weights, x_compute)
        else:
            output = x_compute * weights
        output = output.to(x.dtype)
        return (output, weights) if return_weights else output

    def _fused_layout(self, x: torch.Tensor, axis: int, attention_mask: torch.Tensor | None):
        """The fused kernel's layout for `x`, or None where the exact path serves it."""
        size = x.shape[axis]
        if size > _MAX_LENGTH or not _fused_kernel_serves(x):
            return None
        if attention_mask is None or axis >= attention_mask.dim():
            self._check_size(size, axis)
            chunk = size // self.num_heads
            starts = torch.tensor([head * chunk for head in range(self.num_heads)] + [size])
            row_valid = None
            if attention_mask is not None:  # whole rows along the normalised axis are real or padding
                mask = attention_mask.to(torch.bool).reshape(attention_mask.shape + (1,) * (axis - 2))
                row_valid = mask.expand(x.shape[:axis]).reshape(-1)
            return _FusedLayout(x.shape, axis, self.num_heads, starts, row_valid=row_valid)
        if axis != 1:
            return None
        # Each row splits its own real positions into heads, as `_Buckets` does.
        valid = attention_mask.to(torch.bool)
        positions = torch.sort((~valid).to(torch.uint8), dim=1, stable=True).indices
        num_valid = valid.sum(1, keepdim=True)
        chunk = torch.div(num_valid, self.num_heads, rounding_mode="floor").clamp(min=1)
        starts = torch.minimum(torch.arange(self.num_heads) * chunk, num_valid)
        return _FusedLayout(x.shape, axis, self.num_heads, torch.cat([starts, num_valid], 1), positions=positions)

    def _block_weights(self, x: torch.Tensor, axis: int) -> torch.Tensor:
        size = x.shape[axis]
        chunk = size // self.num_heads
        # The last head takes the remainder: when there is one, it is computed as a block of its own.
        parts = [(0, self.num_heads, chunk * self.num_heads)]
        if chunk * self.num_heads != size:
            last = self.num_heads - 1
            parts = [(0, last, chunk * last), (last, self.num_heads, size - chunk * last)]
        weights = []
        for first_head, end_head, length in parts:
            block = x.narrow(axis, parts[0][2] if first_head else 0, length)
            segments = _Blocks(block, axis, end_head - first_head)
            heads = self._head_parameters(x.dtype, slice(first_head, end_head))
            block_weights = gaussian_weights(
                block.reshape(segments.shape), segments, *heads, self.eps, self.normalization
            )
            weights.append(block_weights.reshape(block.shape))
        return weights[0] if len(weights) == 1 else torch.cat(weights, dim=axis)
