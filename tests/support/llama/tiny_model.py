#!/usr/bin/env python3
"""Writes a tiny llama-architecture GGUF model whose answers are known in advance.

No weights are downloaded: every weight is chosen here. The model has one transformer
block whose attention and feed-forward weights are zero, so its hidden state is the
embedding of the last token; each token's embedding is a one-hot vector, and the output
matrix maps it to one chosen next token. The model is therefore a fixed token chain:

    <|assistant|>        -> "Hello" "▁world" "!" </s>            ("Hello world!", 3 tokens)
    <|assistant_tools|>  -> "<tool_call>" '{"name":▁"' "get_weather" '",▁"arguments":▁'
                            '{"city":▁"' "Paris" '"}}' "</tool_call>" </s>

The chat template ends a prompt with <|assistant_tools|> when the request offers tools and
with <|assistant|> otherwise, and writes tool calls the Hermes 2 Pro way
(<tool_call>{"name": ..., "arguments": ...}</tool_call>), which llama.cpp's server parses
into OpenAI `tool_calls`. What the server does with it (tokenizing, sampling, grammars,
parsing, the JSON and SSE it writes) is the real server's own.

Usage: tiny_model.py OUT.gguf   (needs the PyPI packages `gguf` and `numpy`)
"""

import sys

import numpy as np
from gguf import GGUFWriter, TokenType

N_EMBD = 384
N_HEAD = 4
N_FF = 64
N_CTX = 1024
SCALE = 4.0  # logit margin of the chosen next token, before the norm's sqrt(N_EMBD)

CONTROL = ["<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>", "<|assistant|>",
           "<|assistant_tools|>"]
WORDS = ["Hello", "\u2581world", "<tool_call>", "</tool_call>", '{"name":\u2581"',
         "get_weather", '",\u2581"arguments":\u2581', '{"city":\u2581"', "Paris", '"}}']

CHAINS = [
    ["<|assistant|>", "Hello", "\u2581world", "!", "</s>"],
    ["<|assistant_tools|>", "<tool_call>", '{"name":\u2581"', "get_weather",
     '",\u2581"arguments":\u2581', '{"city":\u2581"', "Paris", '"}}', "</tool_call>", "</s>"],
]

TEMPLATE = """\
{%- if tools -%}
<|im_start|>system
You may call these tools, each as <tool_call>{"name": ..., "arguments": ...}</tool_call>:
{% for tool in tools %}{{ tool | tojson }}
{% endfor %}<|im_end|>
{% endif -%}
{%- for message in messages -%}
<|im_start|>{{ message.role }}
{% if message.content is string %}{{ message.content }}{% endif -%}
{%- if message.tool_calls -%}
{%- for call in message.tool_calls -%}
<tool_call>{"name": "{{ call.function.name }}", "arguments": {{ call.function.arguments | tojson }}}</tool_call>
{%- endfor -%}
{%- endif -%}
<|im_end|>
{% endfor -%}
{%- if add_generation_prompt -%}
{%- if tools -%}<|assistant_tools|>{%- else -%}<|assistant|>{%- endif -%}
{%- endif -%}
"""


def vocabulary():
    tokens, types = [], []
    for t in CONTROL:
        tokens.append(t)
        types.append(TokenType.UNKNOWN if t == "<unk>" else TokenType.CONTROL)
    # Byte fallback: any character outside the vocabulary (e.g. "°") becomes its UTF-8
    # bytes instead of failing the tokenizer.
    for b in range(256):
        tokens.append(f"<0x{b:02X}>")
        types.append(TokenType.BYTE)
    for c in range(0x20, 0x7F):
        tokens.append("\u2581" if c == 0x20 else chr(c))
        types.append(TokenType.NORMAL)
    for w in WORDS:
        tokens.append(w)
        types.append(TokenType.NORMAL)
    return tokens, types


def main(out):
    tokens, types = vocabulary()
    index = {t: i for i, t in enumerate(tokens)}
    n_vocab = len(tokens)
    assert n_vocab <= N_EMBD, "one-hot embeddings need N_EMBD >= the vocabulary"

    # Successor of each token: the end of text unless a chain says otherwise.
    successor = [index["</s>"]] * n_vocab
    for chain in CHAINS:
        for a, b in zip(chain, chain[1:]):
            successor[index[a]] = index[b]

    embd = np.zeros((n_vocab, N_EMBD), dtype=np.float32)
    embd[np.arange(n_vocab), np.arange(n_vocab)] = 1.0
    output = np.zeros((n_vocab, N_EMBD), dtype=np.float32)
    for i, j in enumerate(successor):
        output[j, i] = SCALE

    w = GGUFWriter(out, "llama")
    w.add_name("toka-tiny-chain")
    w.add_context_length(N_CTX)
    w.add_embedding_length(N_EMBD)
    w.add_block_count(1)
    w.add_feed_forward_length(N_FF)
    w.add_head_count(N_HEAD)
    w.add_head_count_kv(N_HEAD)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(N_EMBD // N_HEAD)
    w.add_vocab_size(n_vocab)
    w.add_file_type(0)  # all F32

    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    # SentencePiece merges by score: longer pieces first.
    w.add_token_scores([float(len(t)) if ty == TokenType.NORMAL else 0.0
                        for t, ty in zip(tokens, types)])
    w.add_token_types(types)
    w.add_bos_token_id(index["<s>"])
    w.add_eos_token_id(index["</s>"])
    w.add_unk_token_id(index["<unk>"])
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    w.add_chat_template(TEMPLATE)

    zeros = lambda *shape: np.zeros(shape, dtype=np.float32)  # noqa: E731
    ones = lambda n: np.ones((n,), dtype=np.float32)  # noqa: E731
    w.add_tensor("token_embd.weight", embd)
    w.add_tensor("output_norm.weight", ones(N_EMBD))
    w.add_tensor("output.weight", output)
    w.add_tensor("blk.0.attn_norm.weight", ones(N_EMBD))
    for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
        w.add_tensor(f"blk.0.{name}.weight", zeros(N_EMBD, N_EMBD))
    w.add_tensor("blk.0.ffn_norm.weight", ones(N_EMBD))
    w.add_tensor("blk.0.ffn_gate.weight", zeros(N_FF, N_EMBD))
    w.add_tensor("blk.0.ffn_up.weight", zeros(N_FF, N_EMBD))
    w.add_tensor("blk.0.ffn_down.weight", zeros(N_EMBD, N_FF))

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
