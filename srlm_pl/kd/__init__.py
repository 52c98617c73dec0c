"""Distillation parts that ``DistillModule`` orchestrates: loading and checking the frozen teacher, and turning
sampled completions into KD batches."""
