"""Greedy closed-book answers from a model in the one chat format: what evaluation and training's held-out check ask."""
from __future__ import annotations

from policytune import chat


def greedy(model, tokenizer, questions: list[str], batch_size: int, max_new_tokens: int, desc: str = "answers",
           done: dict[str, str] | None = None, on_batch=None, progress: bool = True) -> list[str]:
    """Greedy answers, batched with left padding, stopped at the end-of-turn marker.

    `done` maps questions already answered (from the resume log) to their answers; `on_batch` is
    called with each new batch's (questions, answers) so the caller can log them.
    """
    import torch
    from tqdm import tqdm

    done = dict(done or {})
    unique = list(dict.fromkeys(questions))
    todo = [q for q in unique if q not in done]
    stop_ids = [i for i in {tokenizer.convert_tokens_to_ids(chat.IM_END), tokenizer.eos_token_id}
                if isinstance(i, int) and i != tokenizer.unk_token_id]
    tokenizer.padding_side = "left"
    bar = tqdm(total=len(unique), initial=len(unique) - len(todo), desc=desc, unit="question", disable=not progress)
    for start in range(0, len(todo), batch_size):
        chunk = todo[start:start + batch_size]
        batch = tokenizer([chat.format_prompt(q) for q in chunk], return_tensors="pt", padding=True,
                          add_special_tokens=False).to(model.device)
        with torch.no_grad():
            output = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False, temperature=None,
                                    top_p=None, top_k=None, eos_token_id=stop_ids, pad_token_id=tokenizer.pad_token_id)
        answers = []
        for row in output[:, batch["input_ids"].shape[1]:]:
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
