"""Images in, masks out: the model's input tensor from a photo, and logits back at photo size."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from vipa.data.transforms import resize_image


def preprocess(image: np.ndarray, size: int) -> np.ndarray:
    """uint8 (H, W, 3) -> float32 (3, size, size) in [0, 1], resized as training resizes."""
    tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255.0)
    return resize_image(tensor, size).numpy()


def probabilities(logits: np.ndarray | torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """(B, 1, S, S) logits -> float32 (B, H, W) foreground probabilities, resized bilinearly."""
    logits = torch.as_tensor(logits).float()
    resized = F.interpolate(logits, size=(int(size[0]), int(size[1])), mode="bilinear",
                            align_corners=False)
    return resized[:, 0].sigmoid().cpu().numpy()


def masks_at_original_size(logits: torch.Tensor, sizes: torch.Tensor,
                           threshold: float = 0.5) -> list[np.ndarray]:
    """(B, 1, S, S) logits -> one bool mask per sample at its original (h, w)."""
    return [probabilities(logit[None], size)[0] >= threshold
            for logit, size in zip(logits, sizes.tolist(), strict=True)]
