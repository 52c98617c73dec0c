"""CodeReward inside a real GRPO step: the rewards the loss gets and the logged ``reward/code_mean`` are the
sandbox's verdicts on the programs of the sampled completions.

The tiny random policy never writes a passing body, so in each group the first sampled completion is replaced by
the task's canonical body and the second by a wrong one (``generate`` is wrapped; everything after it, decoding,
scoring, advantages, the loss, is the module's own); the other completions stay as sampled."""

from __future__ import annotations

import torch

from cli_utils import edit_config, fit, grpo_config, logged
from srlm_pl.data.code_generator import CodeTaskGenerator
from srlm_pl.verifiers import build_program, parse_code_gold, verify_code

G = 4


def _script(real_generate, tokenizer, bodies: dict[str, str]):  # noqa: ANN001, ANN202
    """``generate`` whose rows 0 and 1 of each group become the canonical and a wrong body (+ EOS)."""
    def generate(model, prompts, *args, **kwargs):  # noqa: ANN001, ANN202
        out = real_generate(model, prompts, *args, **kwargs)
        ids, mask = out.completion_ids.clone(), out.completion_mask.clone()
        lengths, truncated = out.lengths.clone(), out.truncated.clone()
        for group, prompt in enumerate(prompts):
            body = bodies[tokenizer.decode(prompt)]
            for row, text in ((group * G, body), (group * G + 1, body.replace("return ", "return 1000 + "))):
                tokens = tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
                assert len(tokens) <= ids.shape[1], "raise max_new_tokens"
                ids[row], mask[row] = tokenizer.pad_token_id, 0
                ids[row, : len(tokens)], mask[row, : len(tokens)] = torch.tensor(tokens), 1
                lengths[row], truncated[row] = len(tokens), False
        return out._replace(completion_ids=ids, completion_mask=mask, lengths=lengths, truncated=truncated)
    return generate


def test_code_reward_in_a_grpo_step_matches_the_sandbox(tmp_path, monkeypatch, tiny_tokenizer) -> None:
    import srlm_pl.generation.backends as backends
    import srlm_pl.modules.grpo as grpo

    config = grpo_config(tmp_path, max_steps=2, num_generations=G, max_new_tokens=32,
                         rewards=[{"class_path": "srlm_pl.verifiers.CodeReward",
                                   "init_args": {"program": "prompt_completion", "timeout": 5.0}}])
    edit_config(config, lambda c: c["data"]["init_args"].update(
        train={"path": "builtin_code", "builtin_code": {"level": 1, "num_problems": 8, "seed": 3}},
        template={"style": "plain", "plain_template": "{question}"}, batch_size=2, max_length=96))
    tasks = [CodeTaskGenerator(1, seed=3).task(i) for i in range(8)]
    scripted = {t.prompt: t.body for t in tasks}
    monkeypatch.setattr(backends, "generate", _script(backends.generate, tiny_tokenizer, scripted))
    scored: list[tuple[list[str], list[str], list[float]]] = []
    real_score = grpo.score

    def spy(texts, golds, *args, **kwargs):  # noqa: ANN001, ANN202
        out = real_score(texts, golds, *args, **kwargs)
        scored.append((list(texts), list(golds), out.total.tolist()))
        return out

    monkeypatch.setattr(grpo, "score", spy)
    fit(config)
    assert len(scored) == 2
    means = logged(tmp_path, "reward/code_mean")
    for step, (texts, golds, rewards) in enumerate(scored):
        expected = []
        for text, gold in zip(texts, golds, strict=True):
            task = parse_code_gold(gold)
            program = build_program(text, task, "prompt_completion")
            expected.append(float(bool(program and verify_code(program, task.tests, entry_point=task.entry_point))))
        assert rewards == expected
        assert rewards[0::G] == [1.0, 1.0] and rewards[1::G] == [0.0, 0.0]  # canonical and wrong bodies
        assert means[step] == sum(expected) / len(expected)
        assert logged(tmp_path, "reward/code_fallbacks")[step] == 0.0
