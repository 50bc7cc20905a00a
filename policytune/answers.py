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


def _returned_cache(output):
    return output.cache if getattr(output, "cache", None) is not None else output.past_key_values


def prefix_cache(model, head: list[int]) -> dict:
    """{cache keyword: the attention cache of the tokens `head`}, to pass to the model's forward or generate with
    `repeated`; {} when head is empty."""
    import torch

    if not head:
        return {}
    with torch.no_grad():
        output = model(input_ids=torch.tensor([head], device=model.device), use_cache=True)
    return {_cache_keyword(model): _returned_cache(output)}


def repeated(cache: dict, rows: int) -> dict:
    """A copy of a `prefix_cache` for each of a batch's rows (the model extends the cache it is given)."""
    out = {}
    for keyword, past in cache.items():
        out[keyword] = copy.deepcopy(past)
        out[keyword].batch_repeat_interleave(rows)
    return out


def decode(model, input_ids, mask, cache: dict, max_new_tokens: int, stop_ids: list[int]) -> list[list[int]]:
    """Greedy continuations of a left-padded batch, each up to and including its first stop token.

    What `model.generate` computes for greedy decoding (positions counted over the unmasked tokens, the head
    on the last position only), except that a row which has stopped leaves the batch: its attention cache is
    dropped and the steps that follow run on the rows still writing. A tuned model's answers end at very
    different lengths (a refusal after 10 tokens, a rambling one at the cap), and generate would carry every
    finished row to the end of the longest. `input_ids` and `mask` cover the whole prompt; `cache` is {keyword:
    a cache of its first tokens} or empty.
    """
    import torch

    keyword = next(iter(cache), None) or _cache_keyword(model)
    past = cache.get(keyword)
    rows = list(range(input_ids.shape[0]))
    out: list[list[int]] = [[] for _ in rows]
    stops = torch.tensor(stop_ids, device=input_ids.device)
    step_input = input_ids[:, past.get_seq_length():] if past is not None else input_ids  # the cache holds the rest
    positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, -step_input.shape[1]:]
    with torch.no_grad():
        for _ in range(max_new_tokens):
            kwargs = {keyword: past} if past is not None else {}
            output = model(input_ids=step_input, attention_mask=mask, position_ids=positions, use_cache=True,
                           logits_to_keep=1, **kwargs)
            past = _returned_cache(output)
            chosen = output.logits[:, -1].argmax(-1)
            for row, token in zip(rows, chosen.tolist()):
                out[row].append(token)
            going = ~torch.isin(chosen, stops)
            if not going.any():
                break
            if not going.all():
                keep = going.nonzero().squeeze(-1)
                past.batch_select_indices(keep)
                rows = [rows[i] for i in keep.tolist()]
                chosen, mask, positions = chosen[keep], mask[keep], positions[keep]
            mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=-1)
            positions = positions[:, -1:] + 1
            step_input = chosen.unsqueeze(-1)
    return out


def greedy(model, tokenizer, questions: list[str], batch_size: int, max_new_tokens: int, desc: str = "answers",
           done: dict[str, str] | None = None, on_batch=None, progress: bool = True, by_length: bool = True,
           share_prefix: bool = True, drop_finished: bool = True) -> list[str]:
    """Greedy answers, batched, stopped at the end-of-turn marker.

    With `by_length`, questions of similar length share a batch (less padding). With `share_prefix`, the prompt
    prefix every question shares (the system turn, about half of a prompt's tokens) is computed once and its
    attention cache copied into each batch: a row is [shared prefix][padding][its own tokens], masked and
    positioned as if unpadded, so each answer is the one its prompt gets alone. With `drop_finished`, a row
    leaves its batch when it stops (`decode`) instead of decoding on to the longest answer as `model.generate`
    does (bench/evaluate.py measures each against plain left-padded batches in the given order, through
    generate). `done` maps questions already answered (from the resume log) to their answers; `on_batch` is
    called with each new batch's (questions, answers) so the caller can log them.
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
    prefix = prefix_cache(model, head)
    bar = tqdm(total=len(unique), initial=len(unique) - len(todo), desc=desc, unit="question", disable=not progress)
    for start in range(0, len(todo), batch_size):
        chunk = todo[start:start + batch_size]
        own = [prompts[q][shared:] for q in chunk]
        width = max(len(tokens) for tokens in own)
        input_ids = torch.tensor([head + [pad_id] * (width - len(t)) + t for t in own], device=model.device)
        mask = torch.tensor([[1] * shared + [0] * (width - len(t)) + [1] * len(t) for t in own], device=model.device)
        cache = repeated(prefix, len(chunk))
        if drop_finished:
            written = decode(model, input_ids, mask, cache, max_new_tokens, stop_ids)
        else:
            with torch.no_grad():
                output = model.generate(input_ids=input_ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                                        do_sample=False, temperature=None, top_p=None, top_k=None,
                                        eos_token_id=stop_ids, pad_token_id=pad_id, **cache)
            written = output[:, input_ids.shape[1]:].tolist()
        answers = []
        for row in written:
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
