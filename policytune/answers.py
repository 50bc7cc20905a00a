"""Greedy closed-book answers from a model in the one chat format: what evaluation and training's held-out check ask."""
from __future__ import annotations

import copy
import inspect

from policytune import chat


def shared_prefix_length(prompts: list[list[int]]) -> int:
    """How many leading token ids every prompt shares (the system turn), leaving each at least one of its own."""
    if len(prompts) < 2:
        return 0
    first, length = prompts[0], min(len(p) for p in prompts) - 1
    for prompt in prompts[1:]:
        length = next((i for i in range(length) if prompt[i] != first[i]), length)
    return length


def _cache_keyword(model) -> str:
    # transformers 5 names the attention cache `cache` and warns on the old name, which 4.x still needs
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(inner.forward).parameters else "past_key_values"


def greedy(model, tokenizer, questions: list[str], batch_size: int, max_new_tokens: int, desc: str = "answers",
           done: dict[str, str] | None = None, on_batch=None, progress: bool = True, by_length: bool = True,
           share_prefix: bool = True) -> list[str]:
    """Greedy answers, batched, stopped at the end-of-turn marker.

    With `by_length`, questions of similar length share a batch (less padding). With `share_prefix`, the prompt
    prefix every question shares (the system turn, about half of a prompt's tokens) is computed once and its
    attention cache copied into each batch: a row is [shared prefix][padding][its own tokens], masked and
    positioned as if unpadded, so each answer is the one its prompt gets alone (bench/evaluate.py measures
    both against plain left-padded batches in the given order). `done` maps questions already answered (from
    the resume log) to their answers; `on_batch` is called with each new batch's (questions, answers) so the
    caller can log them.
    """
    import torch
    from tqdm import tqdm

    done = dict(done or {})
    unique = list(dict.fromkeys(questions))
    todo = [q for q in unique if q not in done]
    stop_ids = [i for i in {tokenizer.convert_tokens_to_ids(chat.IM_END), tokenizer.eos_token_id}
                if isinstance(i, int) and i != tokenizer.unk_token_id]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stop_ids[0]
    prompts = {q: tokenizer(chat.format_prompt(q), add_special_tokens=False)["input_ids"] for q in todo}
    if by_length:
        todo.sort(key=lambda q: len(prompts[q]))
    shared = shared_prefix_length(list(prompts.values())) if share_prefix else 0
    head = prompts[todo[0]][:shared] if shared else []
    if shared:
        cache_keyword = _cache_keyword(model)
        with torch.no_grad():
            prefix = model(input_ids=torch.tensor([head], device=model.device), use_cache=True)
        prefix_cache = prefix.cache if getattr(prefix, "cache", None) is not None else prefix.past_key_values
    bar = tqdm(total=len(unique), initial=len(unique) - len(todo), desc=desc, unit="question", disable=not progress)
    for start in range(0, len(todo), batch_size):
        chunk = todo[start:start + batch_size]
        own = [prompts[q][shared:] for q in chunk]
        width = max(len(tokens) for tokens in own)
        input_ids = torch.tensor([head + [pad_id] * (width - len(t)) + t for t in own], device=model.device)
        mask = torch.tensor([[1] * shared + [0] * (width - len(t)) + [1] * len(t) for t in own], device=model.device)
        cache = {}
        if shared:
            cache[cache_keyword] = copy.deepcopy(prefix_cache)
            cache[cache_keyword].batch_repeat_interleave(len(chunk))
        with torch.no_grad():
            output = model.generate(input_ids=input_ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                                    do_sample=False, temperature=None, top_p=None, top_k=None, eos_token_id=stop_ids,
                                    pad_token_id=pad_id, **cache)
        answers = []
        for row in output[:, input_ids.shape[1]:]:
            text = tokenizer.decode(row, skip_special_tokens=False)
            for stop in chat.STOP + [tokenizer.pad_token or chat.IM_END]:
                text = text.split(stop)[0]
            answers.append(text.strip())
        done.update(zip(chunk, answers))
        if on_batch:
            on_batch(chunk, answers)
        bar.update(len(chunk))
    bar.close()
    return [done[q] for q in questions]
