"""The participants' side of the MURA kit: generated data, the paper's DenseNet recipe,
ensemble bundles, fast inference and class activation maps.

Importing the package is light (no torch): each module imports what it needs.
"""
