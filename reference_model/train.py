"""torchrun's entry point: `torchrun --nproc_per_node N -m reference_model.train DATA --out RUN
...` runs `mura train`'s command (reference_model.cli) in each of the N processes; the run is
reference_model.training. Its own module, so that the command and the run do not import each
other."""

from reference_model.cli import train

if __name__ == "__main__":
    train()
