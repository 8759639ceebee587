"""SFT on the sharded path: the options of transformers' Trainer (run through accelerate) for a layout.

TRL's SFTTrainer is transformers' Trainer, which hands FSDP2, DeepSpeed ZeRO-3 and context
parallelism to accelerate: nothing here trains, it only says which of the engines' options a
job's choices mean. The ranks are started by torchrun (``sft.train_distributed``).
"""

from __future__ import annotations

from typing import Any

from accelerate import ParallelismConfig

from worker.training.sharded import Sharding, ShardingError, check_strategy


def sft_trainer_args(sharding: Sharding, *, packing: bool = False, sequence_parallel: int = 1,
                     cuda: bool = False) -> dict[str, Any]:
    """SFTConfig keyword arguments for ``sharding``; raises ShardingError for what cannot run here."""
    check_strategy(sharding.strategy, rl=False)
    if sharding.strategy != "ddp" and not cuda:
        # accelerate sets up FSDP and DeepSpeed on GPUs only: on CPUs it would quietly run DDP
        raise ShardingError(f"SFT with {sharding.strategy} runs on GPU workers (accelerate shards on GPUs only); "
                            "on a CPU worker choose ddp. The RL update shards on CPUs too.")
    # TRL turns activation checkpointing on by default: here it is the job's choice
    args: dict[str, Any] = {"activation_checkpointing": sharding.checkpointing and sharding.strategy != "fsdp"}
    if sharding.strategy == "fsdp":
        args["fsdp"] = True
        args["fsdp_config"] = {
            "version": 2,
            "reshard_after_forward": True,
            "cpu_offload": sharding.offload,
            # FSDP's own checkpointing: the Trainer's would add an all-gather in every backward
            "activation_checkpointing": sharding.checkpointing,
            "auto_wrap_policy": "TRANSFORMER_BASED_WRAP",  # one unit per decoder layer
            # each rank writes its shards; a retry on another rank count reshards them
            "state_dict_type": "SHARDED_STATE_DICT",
        }
    if sharding.strategy == "zero3":
        offload = {"device": "cpu", "pin_memory": True} if sharding.offload else {"device": "none"}
        args["deepspeed"] = {
            "zero_optimization": {"stage": 3, "offload_param": offload, "offload_optimizer": offload,
                                  "stage3_gather_16bit_weights_on_model_save": True},
            "bf16": {"enabled": "auto"}, "fp16": {"enabled": "auto"},
            "train_micro_batch_size_per_gpu": "auto", "gradient_accumulation_steps": "auto",
            "gradient_clipping": "auto",
        }
    if packing:
        # TRL's best-fit-decreasing packing: windows share a row, padding-free, attention kept
        # inside each window through position_ids
        args.update(packing=True, packing_strategy="bfd")
    if sequence_parallel > 1:
        if not cuda:
            raise ShardingError("Sequence (context) parallelism needs CUDA GPUs (torch's ring attention); "
                                "this worker has none.")
        if sharding.strategy != "fsdp" or sharding.world_size % sequence_parallel:
            raise ShardingError(f"Sequence parallelism of {sequence_parallel} runs on fsdp, over a rank count "
                                f"it divides ({sharding.world_size} ranks here).")
        args["parallelism_config"] = ParallelismConfig(cp_size=sequence_parallel,
                                                       dp_shard_size=sharding.world_size // sequence_parallel)
    return args
