"""The `mura` command: a thin layer over the organisers' side (scorer) and the participants' side
(reference_model). Subcommands are imported only when they run, so `mura score` never pays for
torch and a base install never needs it."""

__version__ = "0.1.0"
