"""The networks the kit trains and ships, with torchvision's ImageNet checkpoint file names
(the names its downloader uses). Kept apart from model.py so that reading a bundle's manifest
does not import torch."""

ARCHITECTURES = {
    "densenet121": "densenet121-a639ec97.pth",
    "densenet169": "densenet169-b2777c0a.pth",
    "densenet201": "densenet201-c1103571.pth",
}
