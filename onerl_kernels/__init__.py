"""onerl_kernels: fused kernels for GRPO-style RL on language models.

Every op has a torch reference (``onerl_kernels.reference``), fast implementations (Triton and/or
CUDA C++, plus a C++ CPU twin for the control-heavy ops) and a ``torch.library`` custom op
(``torch.ops.onerl.*``) with fake and autograd registrations, so it works under
``torch.compile(fullgraph=True)``. ``python -m onerl_kernels`` prints what was built and which
backend each op uses on each device.
"""
from . import reference
from ._backend import build_info
from .advantages import group_advantages
from .gae import gae_advantages
from .grpo_loss import grpo_loss
from .logprobs import logprobs_entropy, logprobs_entropy_from_logits
from .paged_attention import paged_attention, paged_prefill_attention
from .paged_kv import copy_blocks, write_kv
from .sample import sample

__version__ = "0.1.0"

__all__ = ["reference", "build_info", "group_advantages", "gae_advantages", "grpo_loss", "write_kv", "copy_blocks",
           "paged_attention", "paged_prefill_attention", "sample", "logprobs_entropy",
           "logprobs_entropy_from_logits", "__version__"]
