"""Memory at long context: the peak bytes of token log-probs on a 16k-token window, 150k vocabulary.

One training pass (forward with gradients, then backward) of a one-layer Qwen2 with hidden size
64 and a 150,000-token vocabulary on one 16,384-token window, two ways in the same run:
- ours: ``rl_math.token_logprobs`` (the body to hidden states, then lm_head + fp32 + logsumexp in
  checkpointed slices of 1,024 positions);
- the naive way: the model's whole [16k, 150k] logits in fp32, log_softmax, gather (29 GB).

Peak memory is counted, not sampled: a dispatch mode adds up the bytes of every tensor storage
the computation creates and subtracts them when the storage is freed. The two 16k runs are made
of fake tensors (torch's FakeTensorMode: the same operators and shapes, no data), so the naive
way's 29 GB is never allocated on this 24 GB machine; a smaller real run checks that the count on
real tensors matches the fake one. The model's own weights are left out of both peaks (the same
in both). On a GPU the same bytes are what ``torch.cuda.max_memory_allocated`` would report, less
whatever attention kernel the card uses.
"""

from __future__ import annotations

import contextlib
import sys
import weakref
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from torch._subclasses.fake_tensor import FakeTensorMode  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402
from torch.utils._pytree import tree_flatten  # noqa: E402
from transformers import Qwen2Config, Qwen2ForCausalLM  # noqa: E402

from worker.training.rl_math import token_logprobs  # noqa: E402

WINDOW = 16_384
VOCAB = 150_000
MIB = 2**20


class PeakBytes(TorchDispatchMode):
    """The most bytes of tensor storage alive at once among those created inside the mode."""

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[int, int] = {}
        self.now = 0
        self.peak = 0

    def _free(self, key: int) -> None:
        self.now -= self.live.pop(key)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in tree_flatten(out)[0]:
            if isinstance(tensor, torch.Tensor):
                storage = tensor.untyped_storage()  # one Python object per storage while it lives
                key = id(storage)
                if key not in self.live:
                    self.live[key] = storage.nbytes()
                    self.now += storage.nbytes()
                    weakref.finalize(storage, self._free, key)
        self.peak = max(self.peak, self.now)
        return out


def full_logits_logprobs(model, input_ids, attention_mask):
    """The naive way (what this code did before): the whole window's logits, fp32, log_softmax."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits[:, :-1, :].float()
    return torch.gather(torch.log_softmax(logits, dim=-1), 2, input_ids[:, 1:].unsqueeze(-1)).squeeze(-1)


def training_pass_peak(way, window: int, vocab: int, *, fake: bool) -> int:
    config = Qwen2Config(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=window,
                         tie_word_embeddings=True)
    with FakeTensorMode() if fake else contextlib.nullcontext():
        torch.manual_seed(0)
        model = Qwen2ForCausalLM(config)
        ids = torch.randint(0, vocab, (1, window))
        mask = torch.ones_like(ids)
        tracker = PeakBytes()
        with tracker:
            logp = way(model, ids, mask)
            logp.sum().backward()
        return tracker.peak


def main() -> None:
    # the count on real tensors matches the fake one (a window small enough to run for real)
    real = training_pass_peak(full_logits_logprobs, 1024, 32_000, fake=False)
    fake = training_pass_peak(full_logits_logprobs, 1024, 32_000, fake=True)
    print(f"# check: whole-logits peak at 1,024 tokens x 32k vocabulary, real {real / MIB:.0f} MiB, "
          f"counted on fake tensors {fake / MIB:.0f} MiB", flush=True)
    full = training_pass_peak(full_logits_logprobs, WINDOW, VOCAB, fake=True)
    chunked = training_pass_peak(token_logprobs, WINDOW, VOCAB, fake=True)
    print(f"logprob_peak_memory_full_logits_mib: {full / MIB:.0f} MiB (target: baseline)", flush=True)
    print(f"logprob_peak_memory_chunked_mib: {chunked / MIB:.0f} MiB (target: < baseline)", flush=True)
    print(f"# {WINDOW:,}-token window, {VOCAB:,} vocabulary, forward with gradients and backward", flush=True)
    print(f"logprob_peak_memory_vs_full_logits: {chunked / full:.2f} ratio (target: <= 0.25)", flush=True)


if __name__ == "__main__":
    main()
