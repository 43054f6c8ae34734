"""Cross-tokenizer knowledge transfer for FedMKT (algorithms.md §5.2, §5.3), free of Ray and torch.

vocab: vocabulary maps between tokenizers; dtw: token alignment of two tokenizations of one text;
project: a sender's top-k lists moved onto the receiver's tokenization.
"""
