"""Tiny tokenizers with the chat formats of real model families, built offline in a second.

Each template below is written here, in our own Jinja, to render what the family's published
template renders (read from the public model repositories' tokenizer_config.json): the same
special tokens, headers, default system prompt, tools section, tool-call markup and end-of-turn
tokens. None of the real ones has ``{% generation %}``; ``QWEN25_GENERATION`` adds it to exercise
the assistant-mask path. The tokenizers are byte-level BPEs trained on a small corpus, with the
family's special tokens, so a test runs in milliseconds with the real formats' structure.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

# Qwen2.5-Instruct: default system prompt when the conversation has none, tools in the system
# message, hermes <tool_call> JSON, tool results grouped into one user turn of <tool_response>s.
QWEN25 = (
    "{%- if messages and messages[0].role == 'system' %}{%- set system_text = messages[0].content %}"
    "{%- else %}{%- set system_text = 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' %}"
    "{%- endif %}"
    "{{- '<|im_start|>system\\n' + system_text }}"
    "{%- if tools %}"
    "{{- '\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\n"
    "You are provided with function signatures within <tools></tools> XML tags:\\n<tools>' }}"
    "{%- for tool in tools %}{{- '\\n' + (tool | tojson) }}{%- endfor %}"
    "{{- '\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments within "
    "<tool_call></tool_call> XML tags:\\n<tool_call>\\n{\"name\": <function-name>, \"arguments\": "
    "<args-json-object>}\\n</tool_call>' }}"
    "{%- endif %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- for message in messages %}"
    "{%- if message.role == 'user' or (message.role == 'system' and not loop.first)"
    " or (message.role == 'assistant' and not message.tool_calls) %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}"
    "{%- elif message.role == 'assistant' %}"
    "{{- '<|im_start|>assistant' }}{%- if message.content %}{{- '\\n' + message.content }}{%- endif %}"
    "{%- for call in message.tool_calls %}{%- set fn = call.function if call.function is defined else call %}"
    "{{- '\\n<tool_call>\\n{\"name\": \"' + fn.name + '\", \"arguments\": ' + (fn.arguments | tojson)"
    " + '}\\n</tool_call>' }}"
    "{%- endfor %}{{- '<|im_end|>\\n' }}"
    "{%- elif message.role == 'tool' %}"
    "{%- if loop.first or messages[loop.index0 - 1].role != 'tool' %}{{- '<|im_start|>user' }}{%- endif %}"
    "{{- '\\n<tool_response>\\n' + message.content + '\\n</tool_response>' }}"
    "{%- if loop.last or messages[loop.index0 + 1].role != 'tool' %}{{- '<|im_end|>\\n' }}{%- endif %}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

# The same format with the assistant's output inside {% generation %}: the assistant-mask path.
QWEN25_GENERATION = QWEN25.replace(
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}",
    "{%- if message.role == 'assistant' %}{{- '<|im_start|>assistant\\n' }}{% generation %}"
    "{{- message.content + '<|im_end|>' }}{% endgeneration %}{{- '\\n' }}"
    "{%- else %}{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}{%- endif %}",
).replace(
    "{{- '<|im_start|>assistant' }}{%- if message.content %}{{- '\\n' + message.content }}{%- endif %}",
    "{{- '<|im_start|>assistant\\n' }}{% generation %}{{- message.content }}"
    "{%- if message.content %}{{- '\\n' }}{%- endif %}",
).replace(
    "{{- '\\n<tool_call>\\n{\"name\": \"' + fn.name",
    "{%- if not loop.first %}{{- '\\n' }}{%- endif %}{{- '<tool_call>\\n{\"name\": \"' + fn.name",
).replace(
    "{%- endfor %}{{- '<|im_end|>\\n' }}",
    "{%- endfor %}{{- '<|im_end|>' }}{% endgeneration %}{{- '\\n' }}",
)

# Llama 3.1-Instruct: BOS, a system header with "Environment: ipython" when there are tools and the
# knowledge/date lines, tools in the first user message (tools_in_user_message defaults to true),
# every content trimmed, one JSON tool call per assistant message, results in the ipython role
# (as JSON: a string is "iterable" to Jinja, so the real template JSON-quotes it).
LLAMA31 = (
    "{{- bos_token }}"
    "{%- if not tools_in_user_message is defined %}{%- set tools_in_user_message = true %}{%- endif %}"
    "{%- if not date_string is defined %}{%- set date_string = '26 Jul 2024' %}{%- endif %}"
    "{%- if not tools is defined %}{%- set tools = none %}{%- endif %}"
    "{%- if messages[0].role == 'system' %}{%- set system_message = messages[0].content | trim %}"
    "{%- set messages = messages[1:] %}{%- else %}{%- set system_message = '' %}{%- endif %}"
    "{{- '<|start_header_id|>system<|end_header_id|>\\n\\n' }}"
    "{%- if tools is not none %}{{- 'Environment: ipython\\n' }}{%- endif %}"
    "{{- 'Cutting Knowledge Date: December 2023\\n' }}{{- 'Today Date: ' + date_string + '\\n\\n' }}"
    "{{- system_message + '<|eot_id|>' }}"
    "{%- if tools_in_user_message and tools is not none %}"
    "{%- if messages | length != 0 %}{%- set first_user_message = messages[0].content | trim %}"
    "{%- set messages = messages[1:] %}"
    "{%- else %}{{- raise_exception('Cannot put tools in the first user message when there is no first user "
    "message!') }}{%- endif %}"
    "{{- '<|start_header_id|>user<|end_header_id|>\\n\\n' }}"
    "{{- 'Given the following functions, please respond with a JSON for a function call with its proper "
    "arguments that best answers the given prompt.\\n\\n' }}"
    "{{- 'Respond in the format {\"name\": function name, \"parameters\": dictionary of argument name and its "
    "value}.Do not use variables.\\n\\n' }}"
    "{%- for t in tools %}{{- (t | tojson(indent=4)) + '\\n\\n' }}{%- endfor %}"
    "{{- first_user_message + '<|eot_id|>' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if not (message.role == 'ipython' or message.role == 'tool' or 'tool_calls' in message) %}"
    "{{- '<|start_header_id|>' + message.role + '<|end_header_id|>\\n\\n' + message.content | trim + '<|eot_id|>' }}"
    "{%- elif 'tool_calls' in message %}"
    "{%- if message.tool_calls | length != 1 %}"
    "{{- raise_exception('This model only supports single tool-calls at once!') }}{%- endif %}"
    "{%- set call = message.tool_calls[0].function %}"
    "{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' + '{\"name\": \"' + call.name + '\", '"
    " + '\"parameters\": ' + call.arguments | tojson + '}' + '<|eot_id|>' }}"
    "{%- else %}"
    "{{- '<|start_header_id|>ipython<|end_header_id|>\\n\\n' }}"
    "{%- if message.content is mapping or message.content is iterable %}{{- message.content | tojson }}"
    "{%- else %}{{- message.content }}{%- endif %}{{- '<|eot_id|>' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
)

# DeepSeek-V3 (the -0324 template): BOS, every system message joined at the very start, the user
# turn ends with <｜Assistant｜>, tool calls as <｜tool▁calls▁begin｜>...function<｜tool▁sep｜>name
# + a ```json block (the arguments concatenated as a string), outputs wrapped in
# <｜tool▁outputs▁begin｜>...<｜tool▁outputs▁end｜>, every assistant turn ends with eos.
DEEPSEEK_V3 = (
    "{%- set ns = namespace(system_prompt='', first_system=true, is_tool=false, is_first=false,"
    " is_output_first=true, is_last_user=false) %}"
    "{%- for message in messages %}{%- if message.role == 'system' %}"
    "{%- if ns.first_system %}{%- set ns.system_prompt = message.content %}{%- set ns.first_system = false %}"
    "{%- else %}{%- set ns.system_prompt = ns.system_prompt + '\\n\\n' + message.content %}{%- endif %}"
    "{%- endif %}{%- endfor %}"
    "{{- bos_token + ns.system_prompt }}"
    "{%- for message in messages %}"
    "{%- if message.role == 'user' %}"
    "{%- set ns.is_tool = false %}{%- set ns.is_first = false %}{%- set ns.is_last_user = true %}"
    "{{- '<｜User｜>' + message.content + '<｜Assistant｜>' }}"
    "{%- elif message.role == 'assistant' and message.tool_calls is defined and message.tool_calls is not none %}"
    "{%- set ns.is_last_user = false %}"
    "{%- if ns.is_tool %}{{- '<｜tool▁outputs▁end｜>' }}{%- endif %}"
    "{%- set ns.is_first = false %}{%- set ns.is_tool = false %}{%- set ns.is_output_first = true %}"
    "{%- for tool in message.tool_calls %}"
    "{%- set call = '<｜tool▁call▁begin｜>' + tool.type + '<｜tool▁sep｜>' + tool.function.name + '\\n```json\\n'"
    " + tool.function.arguments + '\\n```<｜tool▁call▁end｜>' %}"
    "{%- if not ns.is_first %}{{- message.content + '<｜tool▁calls▁begin｜>' + call }}{%- set ns.is_first = true %}"
    "{%- else %}{{- '\\n' + call }}{%- endif %}"
    "{%- endfor %}"
    "{{- '<｜tool▁calls▁end｜><｜end▁of▁sentence｜>' }}"
    "{%- elif message.role == 'assistant' %}"
    "{%- set ns.is_last_user = false %}"
    "{%- if ns.is_tool %}{{- '<｜tool▁outputs▁end｜>' + message.content + '<｜end▁of▁sentence｜>' }}"
    "{%- set ns.is_tool = false %}"
    "{%- else %}{{- message.content + '<｜end▁of▁sentence｜>' }}{%- endif %}"
    "{%- elif message.role == 'tool' %}"
    "{%- set ns.is_last_user = false %}{%- set ns.is_tool = true %}"
    "{%- if ns.is_output_first %}"
    "{{- '<｜tool▁outputs▁begin｜><｜tool▁output▁begin｜>' + message.content + '<｜tool▁output▁end｜>' }}"
    "{%- set ns.is_output_first = false %}"
    "{%- else %}{{- '\\n<｜tool▁output▁begin｜>' + message.content + '<｜tool▁output▁end｜>' }}{%- endif %}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if ns.is_tool %}{{- '<｜tool▁outputs▁end｜>' }}{%- endif %}"
    "{%- if add_generation_prompt and not ns.is_last_user and not ns.is_tool %}{{- '<｜Assistant｜>' }}{%- endif %}"
)

# GLM-4 (glm-4-9b-chat-hf / -0414): [gMASK]<sop>, the tools in a <|system|> section, system
# messages first, roles <|user|> <|assistant|> <|observation|>, a call is an assistant turn whose
# metadata is the function name and whose content is the arguments; no end-of-turn token: the
# next role token ends a turn (generation stops at <|user|> and <|observation|>).
GLM4 = (
    "{{- '[gMASK]<sop>' }}"
    "{%- if tools %}{{- '<|system|>\\n你是一个名为 ChatGLM 的人工智能助手。\\n\\n# 可用工具' }}"
    "{%- for tool in tools %}{%- set fn = tool.function if tool.function is defined else tool %}"
    "{{- '\\n\\n## ' + fn.name + '\\n\\n' + (fn | tojson(indent=4)) + '\\n在调用上述函数时，请使用 Json 格式表示调用的参数。' }}"
    "{%- endfor %}{%- endif %}"
    "{%- for m in messages if m.role == 'system' %}{{- '<|system|>\\n' + m.content }}{%- endfor %}"
    "{%- for m in messages if m.role != 'system' %}"
    "{%- if m.role == 'user' %}{{- '<|user|>\\n' + m.content }}"
    "{%- elif m.role == 'assistant' %}{{- '<|assistant|>' + (m.metadata if m.metadata is defined else '') + '\\n'"
    " + m.content }}"
    "{%- elif m.role == 'observation' %}{{- '<|observation|>\\n' + m.content }}{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|assistant|>' }}{%- endif %}"
)

# Qwen3 (Qwen3-8B's template, thinking models): Qwen2.5's tools section and hermes calls; an
# assistant turn's reasoning (reasoning_content, else a <think> block in its content) is shown as
# <think>\n...\n</think>\n\n only after the last user query (a user message that is not a
# <tool_response> wrapper), so a later user message removes it from earlier turns; a final turn
# with no reasoning gets an empty <think> block, the same turn once another follows it none.
QWEN3 = (
    "{%- if tools %}{{- '<|im_start|>system\\n' }}"
    "{%- if messages[0].role == 'system' %}{{- messages[0].content + '\\n\\n' }}{%- endif %}"
    "{{- '# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\n"
    "You are provided with function signatures within <tools></tools> XML tags:\\n<tools>' }}"
    "{%- for tool in tools %}{{- '\\n' + (tool | tojson) }}{%- endfor %}"
    "{{- '\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments within "
    "<tool_call></tool_call> XML tags:\\n<tool_call>\\n{\"name\": <function-name>, \"arguments\": "
    "<args-json-object>}\\n</tool_call><|im_end|>\\n' }}"
    "{%- elif messages[0].role == 'system' %}{{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- set ns = namespace(multi_step_tool=true, last_query_index=messages|length - 1) %}"
    "{%- for message in messages[::-1] %}{%- set index = (messages|length - 1) - loop.index0 %}"
    "{%- if ns.multi_step_tool and message.role == 'user' and not (message.content.startswith('<tool_response>')"
    " and message.content.endswith('</tool_response>')) %}"
    "{%- set ns.multi_step_tool = false %}{%- set ns.last_query_index = index %}{%- endif %}"
    "{%- endfor %}"
    "{%- for message in messages %}"
    "{%- if message.role == 'user' or (message.role == 'system' and not loop.first) %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}"
    "{%- elif message.role == 'assistant' %}"
    "{%- set content = message.content %}{%- set reasoning_content = '' %}"
    "{%- if message.reasoning_content is defined and message.reasoning_content is not none %}"
    "{%- set reasoning_content = message.reasoning_content %}"
    "{%- elif '</think>' in message.content %}"
    "{%- set content = message.content.split('</think>')[-1].lstrip('\\n') %}"
    "{%- set reasoning_content = message.content.split('</think>')[0].rstrip('\\n').split('<think>')[-1]"
    ".lstrip('\\n') %}"
    "{%- endif %}"
    "{%- if loop.index0 > ns.last_query_index and (loop.last or reasoning_content) %}"
    "{{- '<|im_start|>' + message.role + '\\n<think>\\n' + reasoning_content.strip('\\n') + '\\n</think>\\n\\n'"
    " + content.lstrip('\\n') }}"
    "{%- else %}{{- '<|im_start|>' + message.role + '\\n' + content }}{%- endif %}"
    "{%- for tool_call in message.tool_calls or [] %}"
    "{%- if (loop.first and content) or not loop.first %}{{- '\\n' }}{%- endif %}"
    "{%- if tool_call.function %}{%- set tool_call = tool_call.function %}{%- endif %}"
    "{{- '<tool_call>\\n{\"name\": \"' + tool_call.name + '\", \"arguments\": ' }}"
    "{%- if tool_call.arguments is string %}{{- tool_call.arguments }}{%- else %}{{- tool_call.arguments | tojson }}"
    "{%- endif %}{{- '}\\n</tool_call>' }}"
    "{%- endfor %}{{- '<|im_end|>\\n' }}"
    "{%- elif message.role == 'tool' %}"
    "{%- if loop.first or messages[loop.index0 - 1].role != 'tool' %}{{- '<|im_start|>user' }}{%- endif %}"
    "{{- '\\n<tool_response>\\n' + message.content + '\\n</tool_response>' }}"
    "{%- if loop.last or messages[loop.index0 + 1].role != 'tool' %}{{- '<|im_end|>\\n' }}{%- endif %}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}"
    "{%- endif %}"
)


@dataclass(frozen=True)
class Family:
    name: str
    template: str
    specials: tuple[str, ...]
    eos: str
    bos: str | None = None
    pad: str | None = None
    stop: tuple[str, ...] = ()  # generation_config.json eos ids, by token


CHATML = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
# The one tool the test agent runs declare, as an OpenAI-style tools list.
BASH_TOOL = [{"type": "function", "function": {
    "name": "bash", "description": "Run a shell command",
    "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}, "required": ["cmd"]}}}]
FAMILIES = {
    "qwen2.5": Family("qwen2.5", QWEN25, CHATML, "<|im_end|>", pad="<|endoftext|>",
                      stop=("<|im_end|>", "<|endoftext|>")),
    "qwen2.5-generation": Family("qwen2.5-generation", QWEN25_GENERATION, CHATML, "<|im_end|>", pad="<|endoftext|>"),
    "llama3.1": Family("llama3.1", LLAMA31, ("<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
                                              "<|end_header_id|>", "<|eot_id|>", "<|eom_id|>", "<|python_tag|>"),
                       "<|eot_id|>", bos="<|begin_of_text|>", pad="<|end_of_text|>",
                       stop=("<|end_of_text|>", "<|eom_id|>", "<|eot_id|>")),
    "deepseek-v3": Family("deepseek-v3", DEEPSEEK_V3, (
        "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜User｜>", "<｜Assistant｜>", "<｜tool▁calls▁begin｜>",
        "<｜tool▁calls▁end｜>", "<｜tool▁call▁begin｜>", "<｜tool▁call▁end｜>", "<｜tool▁sep｜>",
        "<｜tool▁outputs▁begin｜>", "<｜tool▁outputs▁end｜>", "<｜tool▁output▁begin｜>", "<｜tool▁output▁end｜>"),
        "<｜end▁of▁sentence｜>", bos="<｜begin▁of▁sentence｜>", pad="<｜end▁of▁sentence｜>"),
    "glm4": Family("glm4", GLM4, ("<|endoftext|>", "[MASK]", "[gMASK]", "[sMASK]", "<sop>", "<eop>", "<|system|>",
                                  "<|user|>", "<|assistant|>", "<|observation|>"),
                   "<|endoftext|>", pad="<|endoftext|>", stop=("<|endoftext|>", "<|user|>", "<|observation|>")),
    # <think> and the hermes tags are added tokens of Qwen3's vocabulary
    "qwen3": Family("qwen3", QWEN3, (*CHATML, "<think>", "</think>", "<tool_call>", "</tool_call>",
                                     "<tool_response>", "</tool_response>"), "<|im_end|>", pad="<|endoftext|>",
                    stop=("<|im_end|>", "<|endoftext|>")),
}

_CORPUS = [
    "The agent reads the paper, writes the code, runs the experiments and reports the results.",
    "python train.py --epochs 3 --lr 3e-4 && python eval.py --split test",
    "Traceback (most recent call last): RuntimeError: shape mismatch in the attention layer",
    "We reproduce Table 2: accuracy 0.912 on CIFAR-10 with the proposed router.",
    '{"name": "bash", "arguments": {"cmd": "ls /home/paper"}} tool_call tool_response function',
    "You are a helpful assistant. Cutting Knowledge Date: December 2023 Today Date: 26 Jul 2024",
]


def build_family_tokenizer(folder: Path, family: str, *, vocab_size: int = 600):
    """A byte-level BPE tokenizer with ``family``'s special tokens and chat template, saved to ``folder``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    spec = FAMILIES[family]
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(spec.specials),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(_CORPUS * 20, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token=spec.eos, bos_token=spec.bos,
                                   pad_token=spec.pad, additional_special_tokens=list(spec.specials))
    fast.chat_template = spec.template
    fast.save_pretrained(folder)
    if spec.stop:
        ids = [fast.convert_tokens_to_ids(token) for token in spec.stop]
        (folder / "generation_config.json").write_text(json.dumps({"eos_token_id": ids}))
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder)


def build_mistral_tekken(folder: Path, version: str = "v11") -> Path:
    """A tiny tekken tokenizer file that mistral-common loads offline: the 256 bytes, a few merges'
    worth of ranks, and every control token of the format ([INST], [TOOL_CALLS], [CALL_ID]...)."""
    import base64

    from mistral_common.tokens.tokenizers.base import SpecialTokens

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = [{"rank": i, "token_bytes": base64.b64encode(bytes([i])).decode(), "token_str": None} for i in range(256)]
    specials = [{"rank": i, "token_str": token.value, "is_control": True} for i, token in enumerate(SpecialTokens)]
    config = {"pattern": r"[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+",
              "num_vocab_tokens": 256, "default_vocab_size": 256 + 100, "default_num_special_tokens": 100,
              "version": version}
    (folder / "tekken.json").write_text(json.dumps({"config": config, "vocab": vocab, "special_tokens": specials}))
    return folder
