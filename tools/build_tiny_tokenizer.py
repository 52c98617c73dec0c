"""Build the tiny preset's tokenizer (committed under ``srlm_pl/assets/tiny_tokenizer``).

A byte-level BPE with Qwen2's pre-tokenizer (digits split one by one) and Qwen2.5's ChatML special
tokens, trained on the built-in word problems plus a few instruction phrases. Every byte sequence
encodes (byte-level alphabet), so real datasets tokenize too, only less compactly.

    python tools/build_tiny_tokenizer.py [--out srlm_pl/assets/tiny_tokenizer] [--vocab 1024]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from srlm_pl.data.generators import difficulty_preset

SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
QWEN_SPLIT = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
              r"""|\s*[\r\n]+|\s+(?!\S)|\s+""")
CHATML = ("{%- for message in messages %}{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
          "'<|im_end|>' + '\\n' }}{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
          "{%- endif %}")
PHRASES = [
    "system", "user", "assistant", "Question:", "Answer:", "Solve the following math problem.",
    "Reason step by step, and end your response with 'The answer is N' where N is the final number.",
    "Put your final answer within \\boxed{}.", "The answer is", "The final answer is", "#### ",
    "You are a helpful assistant that solves math problems step by step.",
]


def corpus() -> list[str]:
    texts = list(PHRASES)
    for level in (1, 2, 3, 4):
        gen = difficulty_preset(level, seed=12345)
        for i in range(1500):
            p = gen.problem(i)
            texts += [p.question, p.solution]
    return texts


def build(vocab_size: int) -> PreTrainedTokenizerFast:
    tk = Tokenizer(models.BPE(fuse_unk=False, byte_fallback=False))
    tk.normalizer = normalizers.NFC()
    tk.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN_SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tk.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tk.train_from_iterator(corpus(), trainer=trainer)
    tk.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL])
    return PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   model_max_length=4096, chat_template=CHATML,
                                   clean_up_tokenization_spaces=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "srlm_pl/assets/tiny_tokenizer"))
    ap.add_argument("--vocab", type=int, default=1024)
    args = ap.parse_args()
    tok = build(args.vocab)
    tok.save_pretrained(args.out)
    # name the class every transformers version knows (5.x alias of its TokenizersBackend)
    cfg_path = Path(args.out) / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    cfg_path.write_text(json.dumps(cfg, indent=2) + "\n")
    print(f"wrote {args.out}: {len(tok)} tokens")


if __name__ == "__main__":
    main()
