"""SFT's sharded options: what they ask of transformers' Trainer / accelerate, and packing that keeps
every window's loss tokens and attention to itself."""

from __future__ import annotations

import pytest
import torch

from apps.trajectories.chat_native import renderer_for
from apps.trajectories.splitting import SplitConfig
from apps.trajectories.windows import split_examples
from tests.training.test_sft import agent_run, tiny_model, tokenizer  # noqa: F401
from worker.training.sft import Reporter, SFTSettings, build_trainer
from worker.training.sharded import Sharding, ShardingError, deepspeed_installed
from worker.training.sharded_sft import sft_trainer_args


def test_each_strategy_maps_to_the_trainers_own_options():
    fsdp = sft_trainer_args(Sharding("fsdp", procs_per_node=8, offload=True, checkpointing=True), cuda=True)
    assert fsdp["fsdp"] is True and fsdp["activation_checkpointing"] is False  # FSDP's own checkpointing instead
    assert {"version": 2, "cpu_offload": True, "activation_checkpointing": True,
            "state_dict_type": "SHARDED_STATE_DICT"}.items() <= fsdp["fsdp_config"].items()
    ddp = sft_trainer_args(Sharding("ddp", procs_per_node=2, checkpointing=False), packing=True)
    assert ddp == {"activation_checkpointing": False, "packing": True, "packing_strategy": "bfd"}
    context = sft_trainer_args(Sharding("fsdp", procs_per_node=8), sequence_parallel=4, cuda=True)
    assert (context["parallelism_config"].cp_size, context["parallelism_config"].dp_shard_size) == (4, 2)
    with pytest.raises(ShardingError, match="needs CUDA GPUs"):
        sft_trainer_args(Sharding("ddp", procs_per_node=8), sequence_parallel=4, cuda=False)
    with pytest.raises(ShardingError, match="runs on fsdp"):
        sft_trainer_args(Sharding("ddp", procs_per_node=8), sequence_parallel=4, cuda=True)
    with pytest.raises(ShardingError, match="runs on GPU workers"):
        sft_trainer_args(Sharding("fsdp", procs_per_node=2), cuda=False)  # accelerate would run DDP quietly
    if not deepspeed_installed():
        with pytest.raises(ShardingError, match="DeepSpeed, which is not installed"):
            sft_trainer_args(Sharding("zero3", procs_per_node=8), cuda=True)


def test_packed_windows_keep_their_loss_tokens_and_attend_only_to_themselves(tiny_model, tokenizer, tmp_path):  # noqa: F811
    _, examples = split_examples(agent_run(10), SplitConfig(l_max=300, prefix_end=1), renderer_for(tokenizer))
    settings = SFTSettings(base_model=str(tiny_model), output_dir=tmp_path, max_length=600, packing=True)
    trainer = build_trainer(list(examples), settings, Reporter())
    rows = trainer.train_dataset
    assert len(rows) < len(examples)  # windows share rows
    assert sum(sum(1 for label in row["labels"] if label != -100) for row in rows) == sum(
        e.loss_tokens for e in examples)
    row = next(r for r in rows if len(r["seq_lengths"]) > 1)
    batch = trainer.data_collator([row])
    first, second = row["seq_lengths"][:2]
    model = trainer.model.eval()
    with torch.no_grad():
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits[0]
        alone = model(input_ids=batch["input_ids"][:, first:first + second]).logits[0]
    assert torch.allclose(packed[first:first + second], alone, atol=1e-5)
