"""The organisers' side of the MURA kit: scoring, leaderboard and harness.

This package never imports torch, torchvision or reference_model: an organiser's scoring
environment stays light, and a participant's code never runs in the scorer's process.
"""
