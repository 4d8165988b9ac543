"""The toy math world: see 1-shot RLVR work on a CPU in minutes.

* ``world``     -- procedurally generated arithmetic word problems, the three
  solution modes (careful / sloppy / shortcut) the base model is pretrained on,
  the held-out test set, the pool of candidate training examples and JSONL
  export (``python -m onerl.toy.world pool|heldout|example --out FILE``).
* ``tokenizer`` -- the tiny Qwen2-compatible tokenizer and chat template.
* ``score``     -- strict / format-free accuracy and the reflection rate.
* ``pretrain``  -- ``python -m onerl.toy.pretrain --out DIR`` rebuilds the
  shipped base checkpoint in ``onerl/toy/base``.
* ``evaluate``  -- batched greedy / sampled evaluation of a checkpoint.
"""
import os

BASE_CHECKPOINT = os.path.join(os.path.dirname(__file__), "base")
