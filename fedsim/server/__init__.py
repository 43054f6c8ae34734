"""The server trainer's Ray-free runtime (the ServerTrainer actor in actors/ wraps it).

settings: ServerTrainerSettings and its one-line errors; engines: plain torch AdamW or DeepSpeed
ZeRO-2 with CPU optimizer offload; trainer: ServerTrainer (named LoRA models; train with optional
sparse top-k distillation, top-k logits, state as plain data); plain: tensors as numpy and back.
"""
