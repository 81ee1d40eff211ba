"""``python -m annotune …``, the same as the ``annotune`` command (and ``torchrun --nproc-per-node N -m annotune
finetune …`` for training across processes)."""

from annotune.cli import app

app(prog_name="annotune")
