"""Class activation maps (SPEC §2): where in a radiograph the network sees the abnormality.

For DenseNet, M(X) = sum_k w_k f_k(X): the final feature maps f_k (after the last norm and
ReLU) weighted by the single-output head's weights w_k; the logit is M's spatial mean plus the
bias. An ensemble's map is the mean of its members' maps. Maps are upsampled to each image's own
size and drawn over it as a heat map, with the view's and the study's probability.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from reference_model.bundle import Bundle, BundleError, load_bundle
from reference_model.data import ImageError, load_image, transform


@torch.no_grad()
def class_activation_maps(bundle: Bundle, images: list) -> tuple[list[np.ndarray], np.ndarray]:
    """(one map per image at the image's own size, each view's probability) for RGB PIL images."""
    m = bundle.manifest
    prepare = transform(m.input_size, False, m.mean, m.std)
    batch = torch.stack([prepare(image) for image in images])
    maps, probabilities = 0.0, 0.0
    for model in bundle.models:
        features = F.relu(model.features(batch))  # (views, K, h, w)
        weight = model.classifier.weight[0]  # (K,)
        cam = torch.einsum("k,bkhw->bhw", weight, features)
        maps = maps + cam
        probabilities = probabilities + torch.sigmoid(cam.mean(dim=(1, 2)) + model.classifier.bias[0])
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
    probability = float(views.mean())
    verdict = "abnormal" if probability > bundle.manifest.threshold else "normal"
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for path, image, cam, p in zip(paths, images, maps, views):
        target = out / f"{path.stem}_cam.png"
        overlay(image, cam, [f"study: p = {probability:.3f} ({verdict})", f"{path.name}: p = {p:.3f}"]).save(
            target
        )
        written.append(target)
    return probability, written


import click  # noqa: E402

from reference_model.errors import UserError  # noqa: E402
from reference_model.outputs import OutputError, check_output_folder  # noqa: E402


@click.command("cam")
@click.argument("study", type=click.Path(path_type=Path))
@click.option(
    "--bundle", "bundle_path", required=True, type=click.Path(path_type=Path), help="The ensemble bundle."
)
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Folder for the overlays.")
def command(study: Path, bundle_path: Path, out: Path) -> None:
    """Class activation maps for each view of the STUDY folder, overlaid as PNGs in --out."""
    if not study.is_dir():
        raise UserError(f"{study} is not a folder; expected a study folder holding image1.png, ...")
    try:
        check_output_folder(out, "--out")  # before the bundle is loaded and the maps computed
        bundle = load_bundle(bundle_path)
        probability, written = cam_study(study, bundle, out)
    except (BundleError, ImageError, OutputError) as exc:
        raise UserError(str(exc)) from None
    except OSError as exc:  # the disk filled up, or the folder changed under us
        raise UserError(f"cannot write the maps to {out} ({exc.strerror or exc})") from None
    click.echo(f"study probability {probability:.3f}; wrote {len(written)} maps to {out}")
