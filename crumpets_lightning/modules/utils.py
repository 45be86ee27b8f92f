"""Small modules for crumpets batches: image normalisation and a dict wrapper around plain networks.

Example::

    >>> import torch
    >>> normalize = Normalize()
    >>> image = torch.full((1, 3, 2, 2), 255, dtype=torch.uint8)
    >>> normalize(image).shape
    torch.Size([1, 3, 2, 2])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "Normalize", "Unpacker"]

#: Per-channel ImageNet statistics (RGB, values in [0, 1]).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Normalize(nn.Module):
    """``(image / scale - mean) / std`` per channel; uint8 or float images in, float32 (or the float dtype) out.

    The input is never modified. Statistics are buffers, so they move with the module (``.to(device)``).
    A one-channel (gray) image with per-channel RGB statistics is normalised with their averages, so the
    default ImageNet statistics also serve gray images.

    Args:
        mean: Per-channel mean (in units of ``image / scale``); one value for all channels is allowed.
        std: Per-channel standard deviation; all positive.
        scale: Divides the image first (255 for uint8 images holding 0..255).

    Raises:
        ValueError: If ``std`` has a non-positive entry, ``scale`` is not positive, or lengths differ.
    """

    mean: Tensor
    std: Tensor

    def __init__(
        self,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        scale: float = 255.0,
    ) -> None:
        super().__init__()
        mean_t = torch.as_tensor(mean, dtype=torch.float32).reshape(-1)
        std_t = torch.as_tensor(std, dtype=torch.float32).reshape(-1)
        if mean_t.numel() != std_t.numel() and 1 not in (mean_t.numel(), std_t.numel()):
            raise ValueError(f"Normalize: mean {tuple(mean)} and std {tuple(std)} must have the same length")
        if not bool((std_t > 0).all()):
            raise ValueError(f"Expected argument `std` to contain only positive values but got {tuple(std)}")
        if not scale > 0:
            raise ValueError(f"Expected argument `scale` to be positive but got {scale}")
        self.scale = float(scale)
        self.register_buffer("mean", mean_t.view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", std_t.view(1, -1, 1, 1), persistent=False)

    def forward(self, image: Tensor) -> Tensor:
        """Return the normalised image ``[B, C, H, W]`` as a new float tensor.

        Raises:
            ValueError: If the channel count does not match the statistics.
        """
        channels = self.mean.shape[1] if self.mean.shape[1] != 1 else self.std.shape[1]
        gray_with_rgb_stats = image.dim() == 4 and image.shape[1] == 1 and channels == 3
        if image.dim() != 4 or (channels != 1 and image.shape[1] != channels and not gray_with_rgb_stats):
            raise ValueError(
                f"Normalize with {channels} channel(s) cannot handle an image of shape {tuple(image.shape)}"
            )
        if gray_with_rgb_stats:
            mean_src, std_src = self.mean.mean(1, keepdim=True), self.std.mean(1, keepdim=True)
        else:
            mean_src, std_src = self.mean, self.std
        dtype = image.dtype if image.is_floating_point() else torch.float32
        mean = mean_src.to(device=image.device, dtype=dtype)
        std = std_src.to(device=image.device, dtype=dtype)
        return (image.to(dtype) / self.scale - mean) / std

    def extra_repr(self) -> str:
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}, scale={self.scale}"


class Unpacker(nn.Module):
    """Make a tensor-in/tensor-out network dict-in/dict-out: ``output = net(sample[input_key])``.

    As crumpets' ``Unpacker`` did, a uint8 input (the loader's images) is handed to the network as
    ``float32`` with the same values, 0..255 (``.float()``: no scaling, no normalisation; put a
    :class:`Normalize` in front of the network, or use ``CrumpetsModule``, which normalises, for that).
    Inputs of other dtypes are passed as they are.

    The positional order is crumpets' own, ``Unpacker(net, output_key, input_key)`` (as in its documentation).

    Args:
        net: The network.
        output_key: Key its output is stored under in the returned dict.
        input_key: Key of its input in the sample.
        float_input: Whether a uint8 input is converted to ``float32`` (crumpets' behaviour).

    Example::

        >>> net = Unpacker(nn.Conv2d(3, 4, 3))
        >>> net({"image": torch.zeros(2, 3, 8, 8, dtype=torch.uint8)})["output"].shape
        torch.Size([2, 4, 6, 6])
    """

    def __init__(
        self, net: nn.Module, output_key: str = "output", input_key: str = "image", float_input: bool = True
    ) -> None:
        super().__init__()
        self.net = net
        self.input_key = input_key
        self.output_key = output_key
        self.float_input = float_input

    def forward(self, sample: Mapping[str, Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
        """Return a new dict: ``sample`` plus ``output_key`` (the input dict is not modified).

        Raises:
            KeyError: If ``input_key`` is missing.
        """
        if self.input_key not in sample:
            raise KeyError(f"Unpacker needs sample[{self.input_key!r}] but the sample has only {sorted(sample)}")
        value = sample[self.input_key]
        if self.float_input and isinstance(value, Tensor) and value.dtype == torch.uint8:
            value = value.float()
        out = dict(sample)
        out[self.output_key] = self.net(value, *args, **kwargs)
        return out
