"""Training, never run at restore time: the fast CNN's loop (loop) and trainer (fast), album fine-
tuning on pseudo-targets (pseudo_targets, finetune), and Dual-Pivot Tuning (stage1, stage2,
dual_pivot, lora, generic_faces, diffusion_loop).
"""
