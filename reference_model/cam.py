"""Class activation maps (SPEC §2): where in a radiograph the network sees the abnormality.

M(X) = sum_k w_k f_k(X): the final feature maps f_k (the architecture's feature layer, after a
ReLU: for DenseNet its last norm) weighted by the single-output head's weights w_k; the logit is
M's spatial mean plus the bias. An ensemble's map is the mean of its members' maps. Maps are
upsampled to each image's own size and drawn over it as a heat map, with the view's and the
study's probability. Views are read and prepared as prediction reads them
(reference_model.preprocess); the study's probability and verdict follow predict's rule
(reference_model.aggregation).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from reference_model.aggregation import study_label, study_probability
from reference_model.bundle import Bundle
from reference_model.model import feature_maps, head
from reference_model.preprocess import ImageError, load_image, to_input


@torch.no_grad()
def class_activation_maps(bundle: Bundle, images: list) -> tuple[list[np.ndarray], np.ndarray]:
    """(one map per image at the image's own size, each view's probability) for RGB PIL images."""
    m = bundle.manifest
    arrays = np.stack([to_input(image, m.input_size, m.mean, m.std) for image in images])
    batch = torch.from_numpy(arrays).permute(0, 3, 1, 2).contiguous()  # NHWC -> NCHW
    maps, probabilities = 0.0, 0.0
    for model in bundle.models:
        features = feature_maps(model, m.architecture, batch)  # (views, K, h, w)
        linear = head(model, m.architecture)
        cam = torch.einsum("k,bkhw->bhw", linear.weight[0], features)
        maps = maps + cam
        probabilities = probabilities + torch.sigmoid(cam.mean(dim=(1, 2)) + linear.bias[0])
    maps = maps / len(bundle.models)
    probabilities = (probabilities / len(bundle.models)).numpy()
    out = []
    for image, cam in zip(images, maps):
        width, height = image.size
        up = F.interpolate(cam[None, None], size=(height, width), mode="bilinear", align_corners=False)
        out.append(up[0, 0].numpy())
    return out, probabilities


def overlay(image, cam: np.ndarray, lines: list[str]):
    """The image in grey with the map as a heat map over it (blue low, red high), and a caption
    strip below it (so the text never hides the image)."""
    from matplotlib import colormaps
    from PIL import Image, ImageDraw, ImageFont

    span = float(cam.max() - cam.min())
    level = (cam - cam.min()) / span if span > 0 else np.zeros_like(cam)
    heat = (colormaps["jet"](level)[..., :3] * 255).astype(np.float32)
    grey = np.asarray(image.convert("L"), dtype=np.float32)[..., None].repeat(3, axis=2)
    blended = Image.fromarray((0.55 * grey + 0.45 * heat).clip(0, 255).astype(np.uint8))
    font = ImageFont.load_default(size=max(11, min(blended.width // 22, 20)))
    measure = ImageDraw.Draw(blended)
    heights = [measure.textbbox((0, 0), line, font=font)[3] + 4 for line in lines]
    widths = [measure.textbbox((0, 0), line, font=font)[2] + 12 for line in lines]
    canvas = Image.new("RGB", (max(blended.width, *widths), blended.height + sum(heights) + 6), (0, 0, 0))
    canvas.paste(blended, (0, 0))
    draw = ImageDraw.Draw(canvas)
    y = blended.height + 3
    for line, height in zip(lines, heights):
        draw.text((6, y), line, fill=(255, 255, 255), font=font)
        y += height
    return canvas


def study_images(study: Path) -> list[Path]:
    images = sorted(
        (p for p in study.iterdir() if p.suffix.lower() == ".png"), key=lambda p: (len(p.stem), p.stem)
    )  # image2 before image10
    return images


def cam_study(study: str | Path, bundle: Bundle, out: str | Path) -> tuple[float, list[Path]]:
    """Write one overlay per view of `study` into `out`; return (study probability, files)."""
    study, out = Path(study), Path(out)
    paths = study_images(study)
    if not paths:
        raise ImageError(f"{study} holds no .png images; expected a study folder with image1.png, ...")
    images = [load_image(p) for p in paths]
    maps, views = class_activation_maps(bundle, images)
    probability = study_probability(views)
    verdict = "abnormal" if study_label(probability, bundle.manifest.threshold) else "normal"
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for path, image, cam, p in zip(paths, images, maps, views):
        target = out / f"{path.stem}_cam.png"
        overlay(image, cam, [f"study: p = {probability:.3f} ({verdict})", f"{path.name}: p = {p:.3f}"]).save(
            target
        )
        written.append(target)
    return probability, written
