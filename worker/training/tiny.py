"""A tiny chat model built offline in about two seconds: for tests, demos and smoke runs.

A byte-level BPE tokenizer trained on a small corpus, wrapped with a ChatML chat template whose
assistant part sits inside {% generation %} (what TRL's assistant-only loss looks for), and a
two-layer Qwen2. Real runs point the same code at a real local model folder.
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}"
    "{{ '<|im_start|>assistant\\n' }}{% generation %}{{ message['content'] + '<|im_end|>\\n' }}{% endgeneration %}"
    "{% else %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

_CORPUS = [
    "The agent reads the paper, writes the code, runs the experiments and reports the results.",
    "python train.py --epochs 3 --lr 3e-4 && python eval.py --split test",
    "Traceback (most recent call last): RuntimeError: shape mismatch in the attention layer",
    "We reproduce Table 2: accuracy 0.912 on CIFAR-10 with the proposed router.",
    "def forward(self, x):\n    return self.proj(torch.relu(self.fc(x)))",
    "system user assistant tool reasoning submission reproduce.sh README.md",
]


def build_tiny_tokenizer(folder: Path, *, vocab_size: int = 512):
    """Write a byte-level BPE tokenizer with the ChatML template to ``folder``; returns it."""

    # lazy: transformers only when a model is built (`manage.py seed_demo` starts fast when it has nothing to build)
    from transformers import PreTrainedTokenizerFast

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator(_CORPUS * 20, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, eos_token="<|im_end|>", pad_token="<|endoftext|>", bos_token=None,
        additional_special_tokens=["<|im_start|>"],
    )
    fast.chat_template = CHATML_TEMPLATE
    fast.save_pretrained(folder)
    return fast


def build_tiny_model(folder: Path, *, vocab_size: int = 512, hidden_size: int = 64, layers: int = 2, seed: int = 0,
                     tied: bool = True) -> Path:
    """Write a tokenizer and a randomly initialised Qwen2 to ``folder``; returns the folder.
    ``tied``: the LM head shares the embeddings (as Qwen2.5-0.5B); untied as the 7B and larger."""

    # lazy: torch only when a model is built (as above)
    import torch

    # lazy: transformers only when a model is built (as above)
    from transformers import Qwen2Config, Qwen2ForCausalLM

    folder = Path(folder)
    fast = build_tiny_tokenizer(folder, vocab_size=vocab_size)
    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=len(fast), hidden_size=hidden_size, intermediate_size=hidden_size * 2, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
        eos_token_id=fast.eos_token_id, pad_token_id=fast.pad_token_id, bos_token_id=None, tie_word_embeddings=tied,
    )
    Qwen2ForCausalLM(config).save_pretrained(folder)
    return folder
