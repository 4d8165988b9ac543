"""The decoder (Qwen2 / Llama families) and its Hugging Face checkpoint I/O.

    from onerl.models import load, save, build, ModelConfig
    model = load("Qwen2.5-Math-1.5B", dtype="bfloat16", device="cuda")
    hidden = model(input_ids, cu_seqlens)            # packed training forward -> [T, H]
    logp = my_logprob_kernel(hidden, model.lm_head_weight, targets)
    save(model, "out/step_100", copy_files_from="Qwen2.5-Math-1.5B")
"""
from .checkpoint import build, hf_state_dict, load, save
from .transformer import ModelConfig, PagedBatch, Transformer, rope_inv_freq

__all__ = ["ModelConfig", "PagedBatch", "Transformer", "build", "hf_state_dict", "load", "save",
           "rope_inv_freq"]
