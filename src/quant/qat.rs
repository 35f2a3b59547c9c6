//! Quantization-aware training (placeholder while the other passes are verified).
