"""One training loop for every task (AMP, resume, DDP via torchrun)."""
