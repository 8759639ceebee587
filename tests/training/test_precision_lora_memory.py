"""Training as a real checkpoint needs it: fp32 master weights of a bf16 checkpoint, LoRA from SFT
through RL to serving, and log-probs that never hold a long window's whole logits."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from apps.trajectories.chat_native import renderer_for
from apps.trajectories.splitting import SplitConfig
from apps.trajectories.windows import split_examples
from tests.training.test_rl import SPLIT, Recorder
from tests.training.test_sft import agent_run
from worker.training.policy_io import is_lora, load_policy
from worker.training.rl import RLSettings, Stage, train_rl
from worker.training.rl_math import token_logprobs
from worker.training.rl_toy import ToyJudge, ToyRunner, toy_tasks
from worker.training.sft import Reporter, SFTSettings, build_trainer, train_sft
from worker.training.tiny import build_tiny_model


@pytest.fixture(scope="module")
def base_folder(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("base"))


@pytest.fixture(scope="module")
def bf16_folder(base_folder, tmp_path_factory) -> Path:
    """The tiny model saved as real checkpoints ship: bf16 weights (config dtype bfloat16)."""
    folder = tmp_path_factory.mktemp("bf16")
    AutoModelForCausalLM.from_pretrained(base_folder, dtype=torch.bfloat16).save_pretrained(folder)
    AutoTokenizer.from_pretrained(base_folder).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def lora_folder(base_folder, tmp_path_factory) -> Path:
    """What an SFT job with LoRA leaves: an adapter folder over the base."""
    tokenizer = AutoTokenizer.from_pretrained(base_folder)
    _, examples = split_examples(agent_run(4), SplitConfig(l_max=300, prefix_end=1), renderer_for(tokenizer))
    out = tmp_path_factory.mktemp("sft-lora")
    metrics = train_sft(list(examples), SFTSettings(base_model=str(base_folder), output_dir=out, max_length=300,
                                                    method="lora", lora_r=4, max_steps=2, save_steps=1000,
                                                    learning_rate=1e-3, precision="bf16"), Reporter())
    return Path(metrics["final_path"])


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return {k: v.detach().float().clone() for k, v in load_policy(folder, trainable=False, precision="fp32")
            .state_dict().items()}


def rl_settings(policy: Path, out: Path, stages, **overrides) -> RLSettings:
    options = {"n_rollouts": 4, "split": SPLIT, "minibatch_size": 64, "partial_rollouts": False, "seed": 0}
    return RLSettings(policy=str(policy), output_dir=out, stages=tuple(stages), **{**options, **overrides})


def test_one_rl_update_at_lr_1e_6_moves_every_weight_of_a_bf16_checkpoint(bf16_folder, tmp_path, monkeypatch):
    from worker.training import rl_update

    autocast_seen: list[bool] = []

    def noting(*args, **kwargs):  # the real function, noting whether it ran under bf16 autocast
        autocast_seen.append(torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16)
        return token_logprobs(*args, **kwargs)

    monkeypatch.setattr(rl_update, "token_logprobs", noting)
    result = train_rl(rl_settings(bf16_folder, tmp_path, [Stage(1500.0, 1)], learning_rate=1e-6),
                      toy_tasks(1, max_turns=3, tokens_per_turn=6), ToyRunner(), ToyJudge(), Recorder())
    assert result["precision"] == "bf16" and autocast_seen and all(autocast_seen)
    before, after = weights(bf16_folder), weights(Path(result["final_path"]))
    changed = sum(int((before[k] != after[k]).sum()) for k in before)
    total = sum(v.numel() for v in before.values())
    # pure bf16 AdamW rounds a 1e-6 step back to the weight: 2% moved. fp32 masters keep every step.
    assert changed / total >= 0.99, f"{changed / total:.1%} of the weights changed"
    assert AutoModelForCausalLM.from_pretrained(result["final_path"]).dtype == torch.float32  # the masters are saved


@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_sft_trains_fp32_master_weights_of_a_bf16_checkpoint_under_both_precisions(bf16_folder, tmp_path,
                                                                                   precision):
    tokenizer = AutoTokenizer.from_pretrained(bf16_folder)
    _, examples = split_examples(agent_run(3), SplitConfig(l_max=300, prefix_end=1), renderer_for(tokenizer))
    settings = SFTSettings(base_model=str(bf16_folder), output_dir=tmp_path, max_length=300, precision=precision,
                           max_steps=1, save_steps=1000)
    trainer = build_trainer(list(examples), settings, Reporter())
    computed: list[torch.dtype] = []
    trainer.model.model.layers[0].mlp.up_proj.register_forward_hook(lambda _m, _a, out: computed.append(out.dtype))
    trainer.train()
    assert {p.dtype for p in trainer.model.parameters()} == {torch.float32}  # the master weights
    # and the matmuls in the precision asked for: bf16 autocast on this CPU too
    assert computed and set(computed) == {torch.bfloat16 if precision == "bf16" else torch.float32}


def test_sft_refuses_fp16_without_a_gpu(base_folder, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(base_folder)
    _, examples = split_examples(agent_run(2), SplitConfig(l_max=300, prefix_end=1), renderer_for(tokenizer))
    settings = SFTSettings(base_model=str(base_folder), output_dir=tmp_path, max_length=300, precision="fp16")
    with pytest.raises(ValueError, match="fp16 needs a GPU"):
        build_trainer(list(examples), settings, Reporter())


def test_rl_from_an_sft_lora_checkpoint_trains_the_adapter_saves_and_resumes(lora_folder, tmp_path):
    assert (lora_folder / "adapter_config.json").is_file()
    policy = load_policy(lora_folder)
    trainable = [name for name, p in policy.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in name for name in trainable)
    stages = [Stage(1500.0, 1), Stage(3000.0, 1)]
    tasks = toy_tasks(1, max_turns=3, tokens_per_turn=6)
    first = train_rl(rl_settings(lora_folder, tmp_path, stages[:1], learning_rate=1e-2), tasks, ToyRunner(),
                     ToyJudge(), Recorder())
    stage1 = Path(first["final_path"])
    assert first["lora"] is True and (stage1 / "adapter_config.json").is_file()
    assert not (stage1 / "model.safetensors").exists()  # the adapter, not a copy of the base
    sft, trained = weights(lora_folder), weights(stage1)
    lora_keys = [k for k in sft if "lora_" in k]
    assert any(not torch.equal(sft[k], trained[k]) for k in lora_keys)
    assert all(torch.equal(sft[k], trained[k]) for k in sft if "lora_" not in k)  # the base stays frozen
    # a retried job goes on after stage 1 from its checkpoint, optimizer state included
    second = train_rl(rl_settings(lora_folder, tmp_path, stages, learning_rate=1e-2), tasks, ToyRunner(),
                      ToyJudge(), Recorder(), start_stage=2, start_from=str(stage1))
    stage2 = Path(second["final_path"])
    assert second["stages"][0]["start_from"] == str(stage1) and (stage2 / "adapter_config.json").is_file()

    def adam_steps(folder: Path) -> float:
        state = torch.load(folder / "optimizer.pt", weights_only=True)["state"]
        return float(next(iter(state.values()))["step"])

    assert adam_steps(stage2) == adam_steps(stage1) + 1
    assert any(not torch.equal(trained[k], weights(stage2)[k]) for k in lora_keys)


def test_a_lora_policy_can_be_merged_into_its_base_to_train_every_weight(lora_folder):
    adapter = load_policy(lora_folder, precision="fp32")
    merged = load_policy(lora_folder, precision="fp32", lora="merge")
    assert is_lora(adapter) and not is_lora(merged)
    assert all(p.requires_grad for p in merged.parameters())
    ids = torch.tensor([[5, 9, 31, 7, 2, 11]])
    with torch.no_grad():
        torch.testing.assert_close(merged(input_ids=ids).logits, adapter(input_ids=ids).logits, rtol=1e-4, atol=1e-5)


class HeadWidths:
    """Records how many positions each lm_head call sees."""

    def __init__(self, head: torch.nn.Module) -> None:
        self.widths: list[int] = []
        head.register_forward_hook(lambda _m, args, _out: self.widths.append(args[0].shape[1]))


@pytest.mark.parametrize("lora", [False, True])
def test_chunked_log_probs_equal_the_whole_logits_gradients_too(base_folder, lora_folder, lora):
    model = load_policy(lora_folder if lora else base_folder, precision="fp32")
    torch.manual_seed(0)
    ids = torch.randint(3, 300, (2, 21))
    mask = torch.ones_like(ids)
    mask[1, 15:] = 0  # a padded row
    weight = torch.randn(2, 20)

    full = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float().log_softmax(-1)
    full = full.gather(2, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
    (full * weight).sum().backward()
    expected = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad(set_to_none=True)

    head = model.get_base_model().get_output_embeddings() if lora else model.get_output_embeddings()
    widths = HeadWidths(head)
    chunked = token_logprobs(model, ids, mask, chunk_size=6)
    torch.testing.assert_close(chunked, full, rtol=1e-5, atol=1e-5)
    (chunked * weight).sum().backward()
    for name, grad in expected.items():
        torch.testing.assert_close(dict(model.named_parameters())[name].grad, grad, rtol=1e-4, atol=1e-6)
    # never the whole window's logits: each head call sees one slice (and again in the backward)
    assert widths.widths and max(widths.widths) <= 6 and sum(widths.widths) == 2 * 20
    whole = token_logprobs(model, ids, mask, chunk_size=None)  # the model's own forward, for wrappers
    torch.testing.assert_close(whole, full, rtol=1e-5, atol=1e-5)
    assert widths.widths[-1] == 21


def test_a_lora_policy_is_served_as_an_adapter_to_vllm_and_merged_to_sglang(lora_folder, tmp_path):
    from safetensors.torch import load_file

    from tests.support.openai_stub import OpenAIStub
    from worker.training.rl_serving import RemotePolicy, ServerConfig

    policy = load_policy(lora_folder, precision="fp32")
    with OpenAIStub() as stub:
        vllm = RemotePolicy(ServerConfig(base_url=stub.base_url, model="policy", reload="vllm_lora"), tmp_path / "v")
        vllm.publish(policy, 3)
        assert stub.state.reloads[-1] == {"path": "/v1/load_lora_adapter", "lora_name": "policy-v3",
                                          "lora_path": str(tmp_path / "v" / "policy-v3")}
        sent = tmp_path / "v" / "policy-v3"
        assert (sent / "adapter_config.json").is_file() and not (sent / "model.safetensors").exists()
        assert vllm.served_model == "policy-v3"
        sglang = RemotePolicy(ServerConfig(base_url=stub.base_url, model="policy"), tmp_path / "s")
        sglang.publish(policy, 4)
        full = tmp_path / "s" / "policy-v4"
        assert stub.state.reloads[-1]["model_path"] == str(full) and not (full / "adapter_config.json").exists()
    saved = load_file(full / "model.safetensors")
    assert not any("lora_" in k or "base_layer" in k for k in saved)
    expected = load_policy(lora_folder, precision="fp32", lora="merge").state_dict()
    for key, value in saved.items():
        torch.testing.assert_close(value, expected[key], rtol=1e-5, atol=1e-6)
    assert policy.get_base_model().model.layers[0].self_attn.q_proj.merged is False  # the policy was not touched


@pytest.mark.django_db
def test_the_rl_form_takes_a_lora_folder_and_sends_vllm_only_adapters(client_for, lora_folder, base_folder):
    from tests.jobs.test_rl_job import TOY

    def errors(config: dict) -> dict:
        response = client_for("operator").post("/api/jobs/", {"kind": "rl", "config": config},
                                               content_type="application/json")
        assert response.status_code == 400
        return response.json()["config"]

    server = {**TOY, "task_source": "papers", "policy_server_url": "http://gpu.example.org:8000/v1",
              "policy_server_reload": "vllm_lora"}
    assert "takes a LoRA adapter" in errors({**server, "policy_model": str(base_folder)})["policy_server_reload"][0]
    assert "takes a LoRA adapter" in errors({**server, "policy_model": str(lora_folder),
                                             "lora_mode": "merge"})["policy_server_reload"][0]
    adapter = errors({**server, "policy_model": str(lora_folder)})
    assert "policy_server_reload" not in adapter and "policy_model" not in adapter
    assert "precision" in errors({**TOY, "policy_model": str(lora_folder), "precision": "fp8"})


@pytest.mark.django_db
def test_an_rl_job_from_a_lora_checkpoint_records_what_it_trained(lora_folder, personas):
    from apps.jobs.models import Job
    from apps.jobs.progress import Progress
    from apps.jobs.services.launching import validate_config
    from tests.jobs.test_rl_job import TOY
    from worker.engines.rl import run

    config = validate_config("rl", {**TOY, "stages": "20m:1", "policy_model": str(lora_folder), "precision": "fp32"})
    assert config["gradient_checkpointing"] is True and config["lora_mode"] == "train"
    job = Job.objects.create(kind="rl", state=Job.State.RUNNING, created_by=personas["operator"], config=config)
    result = run(job, Progress(job.pk))
    assert (result["precision"], result["lora"]) == ("fp32", True)
    assert (Path(result["final_path"]) / "adapter_config.json").is_file()


def test_rl_minibatches_group_windows_of_similar_length_so_padding_stays_small():
    from types import SimpleNamespace

    from worker.training.rl_update import plan_minibatches

    lengths = [2000, 30000, 2100, 31000]
    subs = [SimpleNamespace(example=SimpleNamespace(input_ids=[0] * n)) for n in lengths]
    groups = plan_minibatches(subs, 2)
    padding = sum(max(len(s.example.input_ids) for s in g) * len(g) - sum(len(s.example.input_ids) for s in g)
                  for g in groups)
    assert [len(g) for g in groups] == [2, 2] and padding == 1100  # in arrival order: 56,900 pad tokens


def test_sft_reads_its_examples_from_disk_and_takes_them_one_at_a_time(base_folder, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(base_folder)
    _, examples = split_examples(agent_run(8), SplitConfig(l_max=200, prefix_end=1), renderer_for(tokenizer))
    examples = list(examples)

    def one_at_a_time():  # what the job hands over: a generator, never a list of every window
        yield from examples

    settings = SFTSettings(base_model=str(base_folder), output_dir=tmp_path, max_length=200)
    trainer = build_trainer(one_at_a_time(), settings, Reporter())
    files = [Path(f["filename"]) for f in trainer.train_dataset.cache_files]
    assert files and all(f.is_relative_to(tmp_path / "dataset") for f in files)  # memory-mapped Arrow files
    fed = sorted(tuple(b["labels"][0].tolist()) for b in trainer.get_train_dataloader())
    assert fed == sorted(tuple(e.labels) for e in examples)


@pytest.mark.django_db
def test_the_sft_form_refuses_fp16_on_a_cpu_worker(client_for, base_folder):
    response = client_for("operator").post("/api/jobs/", {"kind": "sft", "config": {
        "base_model": str(base_folder), "precision": "fp16", "gpus": 0}}, content_type="application/json")
    assert response.status_code == 400 and "fp16 needs a GPU" in response.json()["config"]["precision"][0]


def test_transformers_loads_and_saves_a_lora_checkpoint_with_the_pinned_peft(lora_folder, tmp_path):
    """The path a checkpoint served with transformers takes (its own peft integration): transformers
    5.24+ refuses peft 0.21, the newest released; requirements.txt pins a pair that works."""
    model = AutoModelForCausalLM.from_pretrained(lora_folder)
    model.save_pretrained(tmp_path / "again")
    assert (tmp_path / "again" / "adapter_config.json").is_file()


def test_merged_weights_carry_the_base_models_own_names_with_a_module_trained_whole(base_folder):
    from peft import LoraConfig, get_peft_model

    from worker.training.policy_io import merged_state_dict

    base = AutoModelForCausalLM.from_pretrained(base_folder, dtype=torch.float32)
    names = set(base.state_dict())
    model = get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj", "v_proj"], modules_to_save=["lm_head"]))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "modules_to_save" in name:
                p.add_(1.0)  # the trained copy differs from the frozen original
    merged = merged_state_dict(model)
    assert set(merged) == names
    original = model.get_base_model().lm_head.original_module.weight
    assert torch.equal(merged["lm_head.weight"], original + 1.0)


def test_packed_minibatches_train_exactly_as_padded_ones_without_a_pad_token(base_folder, monkeypatch):
    """Padding-free RL: a minibatch's windows end to end in one row, each attending to itself only.
    One update from the same weights equals the padded update; the forwards see no pad token."""
    from dataclasses import replace

    from tests.support.subtrajectories import random_batch
    from worker.training import rl_update

    subs = random_batch(3, rows=5, shortest=6, longest=40)
    for sub, sampler_shift in zip(subs, (0.1, -0.2, 0.0, 0.3, -0.1), strict=True):  # TIS weights in play
        sub.example = replace(sub.example, sampler_logprobs=[None] + [-2.0 + sampler_shift] * (len(sub.example.input_ids) - 1))
    widths: list[int] = []
    real = rl_update.token_logprobs

    def noting(model, ids, *args, **kwargs):
        widths.append(ids.numel())
        return real(model, ids, *args, **kwargs)

    monkeypatch.setattr(rl_update, "token_logprobs", noting)
    trained, stats = {}, {}
    for packing in (False, True):
        model = load_policy(base_folder, "cpu", precision="fp32")
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
        settings = rl_settings(base_folder, Path("unused"), [Stage(60.0, 1)], precision="fp32", minibatch_size=5,
                               kl_coef=0.1, packing=packing)
        widths.clear()
        stats[packing] = rl_update.train_on_batch(model, model, optimizer, subs, settings, pad_id=0)
        trained[packing] = {k: v.clone() for k, v in model.state_dict().items()}
        if packing:  # old, reference and training forwards, each over exactly the windows' tokens
            assert widths == [sum(len(s.example.input_ids) for s in subs)] * 3
        else:
            assert widths[0] == 5 * max(len(s.example.input_ids) for s in subs)
    assert max(float((trained[True][k] - trained[False][k]).abs().max()) for k in trained[True]) < 1e-6
    assert stats[True].tokens == stats[False].tokens
    assert abs(stats[True].loss - stats[False].loss) < 1e-6
    assert abs(stats[True].sampler_mismatch - stats[False].sampler_mismatch) < 1e-6
