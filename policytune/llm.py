"""The OpenAI-compatible endpoint every LLM call goes through (generation and judging).

Configured by OPENAI_BASE_URL / OPENAI_API_KEY / --model for OpenAI, vLLM, Ollama or any
llama-server. With nothing configured, an embedded llama.cpp server (xllamacpp) is started on
127.0.0.1 with a free port and the embedded SmolLM2 GGUF (or --teacher-gguf), and stopped on exit.

Retries live here once: connection errors, timeouts, 429 (honouring Retry-After) and 5xx back off
exponentially; invalid JSON, schema mismatches and answers cut by max_tokens are retried a bounded
number of times and then reported as LLMError for the caller to log and skip.
"""
from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import os
import queue
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, TypeVar

from policytune import config, cpu
from policytune.config import UserError

DEFAULT_PARALLEL = 4


@dataclass
class LLMOptions(config.Base):
    """Endpoint flags shared by the stages that call an LLM."""

    base_url: str = field(default="", metadata={"help": "OpenAI-compatible base URL (else OPENAI_BASE_URL; empty: start the embedded llama-server)"})
    model: str = field(default="", metadata={"help": "model name at the endpoint (else OPENAI_MODEL; the embedded server ignores it)"})
    teacher_gguf: str = field(default="", metadata={"help": "a local GGUF for the embedded server instead of SmolLM2-135M (e.g. a larger instruct model)"})
    concurrency: int = field(default=DEFAULT_PARALLEL, metadata={"help": "requests in flight at once (also the embedded server's slots)"})
    server_threads: int = field(default=0, metadata={"help": "CPU threads of the embedded server (0: every core while other processes leave them idle, else one fewer)"})
    server_ctx_per_slot: int = field(default=2048, metadata={"help": "context tokens per slot of the embedded server"})
    request_timeout: float = field(default=120.0, metadata={"help": "seconds before one request is abandoned and retried"})
    max_retries: int = field(default=4, metadata={"help": "retries per request for transport errors and bad output"})
    seed: int = field(default=0, metadata={"help": "sampling seed sent to the endpoint"})

    def __post_init__(self) -> None:
        for name, low in (("concurrency", 1), ("server_ctx_per_slot", 64), ("max_retries", 0), ("server_threads", 0)):
            if getattr(self, name) < low:
                raise UserError(f"--{name.replace('_', '-')} must be at least {low}, got {getattr(self, name)}")
        if not self.request_timeout > 0:
            raise UserError(f"--request-timeout must be more than 0 seconds, got {self.request_timeout:g}")


class LLMError(Exception):
    """One request gave no usable answer after its retries: log it and move on."""


class TransportError(LLMError):
    """The request, not the model's answer, failed (timeout, rate limit, server error, rejected request): a
    rerun may well succeed, so no resume cache may record it as the answer."""


class EndpointDown(UserError):
    """The endpoint cannot be reached at all: the stage stops (its finished work is kept)."""


@dataclass
class Endpoint:
    client: Any          # openai.OpenAI
    model: str           # the name recorded in provenance (a GGUF's file name, or the model's name at the endpoint)
    base_url: str
    options: LLMOptions
    server: Any = None   # the embedded xllamacpp.Server, when we started one
    local: bool = False
    identity: str = ""   # which model answers, for the resume caches' keys (gguf_identity, endpoint_identity)

    def __post_init__(self) -> None:
        self.identity = self.identity or self.model


# A GGUF is sampled, not hashed whole: they are gigabytes, and a rerun should not read one through to find its cache.
_SAMPLE = 1 << 20
_SAMPLES = 64

# The embedded SmolLM2 GGUF keeps the identity its caches were keyed on before GGUFs were told apart by content (its
# file name), so the resume caches of default runs stay valid; any other content under that name is keyed by content.
_NAMED_BY_FILE_NAME = {"gguf:98362432:549f215006d350d7": "SmolLM2-135M-Instruct.Q4_1.gguf"}


def gguf_identity(path: str | os.PathLike) -> str:
    """A local GGUF by its content: its size, its first and last MiB (the header and metadata, the last tensors) and
    64 KiB at every 64th of the file between. A copy elsewhere is the same model, another file of the same name is not."""
    size = os.path.getsize(path)
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        digest.update(handle.read(_SAMPLE))
        for i in range(1, _SAMPLES):
            handle.seek(size * i // _SAMPLES)
            digest.update(handle.read(_SAMPLE // 16))
        handle.seek(max(0, size - _SAMPLE))
        digest.update(handle.read(_SAMPLE))
    identity = f"gguf:{size}:{digest.hexdigest()[:16]}"
    return _NAMED_BY_FILE_NAME.get(identity, identity)


def endpoint_identity(base_url: str, model: str) -> str:
    """A configured endpoint by where it is and what it calls the model: two llama-servers that both name theirs
    'local' are two teachers. Credentials in the URL are masked (the API key is never part of it): they say who
    asks, not which model answers."""
    return f"{config.redact_url(base_url).rstrip('/')} {model}"


def server_threads(requested: int) -> int:
    """The embedded server's threads: as asked, else every core while other processes leave them idle.

    The client mostly waits on HTTP, so on an idle 2-core machine 2 server threads make 1.5x more
    requests per second than 1 (BENCHMARKS.md); with another job on a core, a second spinning
    llama.cpp thread only fights it, so one core is left free."""
    if requested > 0:
        return requested
    cores = os.cpu_count() or 1
    others = cpu.others_busy(0.5)
    chosen = cpu.choose_threads(cores, cores, others if others is not None else 1.0)
    print(f"embedded server threads: {chosen} of {cores} cores (other processes use "
          f"{'?' if others is None else f'{others:.1f}'})", flush=True)
    return chosen


def start_local_server(gguf: str, parallel: int, threads: int, ctx_per_slot: int, lora: str | None = None,
                       lora_scale: float = 1.0, port: int = 0):
    """Start llama.cpp's server in this process on 127.0.0.1 (port 0: a free one). Returns the server."""
    import xllamacpp

    if not os.path.isfile(gguf):
        raise UserError(f"{gguf}: GGUF file not found")
    params = xllamacpp.CommonParams()
    params.model.path = gguf
    params.hostnames = ["127.0.0.1"]
    params.port = port
    params.n_parallel = max(1, parallel)
    params.n_ctx = max(1, parallel) * ctx_per_slot
    params.cpuparams.n_threads = threads
    params.cpuparams_batch.n_threads = threads
    params.verbosity = -1  # llama.cpp logs every slot event to stderr otherwise
    if lora:
        params.lora_adapters = [xllamacpp.CommonAdapterLoraInfo(lora, lora_scale)]
    try:
        return xllamacpp.Server(params)
    except Exception as exc:  # llama.cpp reports load failures as a generic runtime error
        raise UserError(f"{gguf}: llama.cpp could not load it ({exc})") from None


@contextlib.contextmanager
def connect(opts: LLMOptions) -> Iterator[Endpoint]:
    """Yield a ready endpoint; an embedded server started here is stopped on exit, errors and Ctrl-C."""
    from openai import OpenAI

    base_url = opts.base_url or os.environ.get("OPENAI_BASE_URL", "")
    model = opts.model or os.environ.get("OPENAI_MODEL", "")
    if base_url:
        api_key = os.environ.get("OPENAI_API_KEY") or "not-needed"
        if not model:
            raise UserError("--model (or OPENAI_MODEL) is required with a configured endpoint")
        client = OpenAI(base_url=base_url, api_key=api_key, timeout=opts.request_timeout, max_retries=0)
        yield Endpoint(client=client, model=model, base_url=base_url, options=opts,
                       identity=endpoint_identity(base_url, model))
        return

    from policytune import models

    gguf = opts.teacher_gguf or os.environ.get("POLICYTUNE_TEACHER_GGUF", "") or str(models.embedded_gguf())
    server = start_local_server(gguf, opts.concurrency, server_threads(opts.server_threads), opts.server_ctx_per_slot)
    url = server.listening_address + "/v1"
    print(f"embedded llama-server on {server.listening_address} ({os.path.basename(gguf)}, "
          f"{opts.concurrency} slots)", flush=True)
    client = OpenAI(base_url=url, api_key="local", timeout=opts.request_timeout, max_retries=0)
    # The server's port is new on every start: the model is identified by its file, so a rerun finds its cache.
    endpoint = Endpoint(client=client, model=os.path.basename(gguf), base_url=url, options=opts, server=server, local=True,
                        identity=gguf_identity(gguf))
    try:
        yield endpoint
    except KeyboardInterrupt:
        # xllamacpp stops its server when the last reference goes, and stopping waits for every request in flight to
        # finish generating: minutes on a CPU, after the user asked to stop. What is worth keeping is on disk (atomic
        # writes, fsynced resume logs), so the server is kept alive to the end, and the end comes without that wait.
        _abandoned.append(server)
        atexit.register(os._exit, 130)
        raise
    finally:
        client.close()
        endpoint.server = None
        del server


_abandoned: list = []  # embedded servers left running by a Ctrl-C (see `connect`)


def embedded_teacher(opts: LLMOptions) -> bool:
    """True when `connect` would start the embedded SmolLM2-135M server (no endpoint and no --teacher-gguf)."""
    return not (opts.base_url or os.environ.get("OPENAI_BASE_URL")) and \
        not (opts.teacher_gguf or os.environ.get("POLICYTUNE_TEACHER_GGUF"))


def offline(opts: LLMOptions) -> Endpoint:
    """The endpoint a stage names in its records when it will make no request: nothing is started or called."""
    from policytune import models

    base_url = opts.base_url or os.environ.get("OPENAI_BASE_URL", "")
    if base_url:
        model = opts.model or os.environ.get("OPENAI_MODEL", "")
        identity = endpoint_identity(base_url, model)
    else:
        gguf = opts.teacher_gguf or os.environ.get("POLICYTUNE_TEACHER_GGUF", "") or str(models.embedded_gguf())
        model = os.path.basename(gguf)
        # No request is made: a file that is not there only names the records, as it did before
        identity = gguf_identity(gguf) if os.path.isfile(gguf) else model
    return Endpoint(client=None, model=model, base_url="", options=opts, local=embedded_teacher(opts), identity=identity)


def json_format(name: str, schema: dict) -> dict:
    """response_format asking for JSON that matches `schema` (OpenAI structured outputs)."""
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}


def _retry_after(exc: Exception) -> float | None:
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None) or {}
    value = headers.get("retry-after") if hasattr(headers, "get") else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _backoff(attempt: int, base: float = 0.5, cap: float = 20.0) -> float:
    return min(cap, base * 2 ** attempt) * (0.5 + random.random() / 2)


def complete(endpoint: Endpoint, messages: list[dict], **kwargs: Any) -> Any:
    """One chat completion with transport retries. Raises EndpointDown or LLMError."""
    import openai

    opts = endpoint.options
    last: Exception | None = None
    for attempt in range(opts.max_retries + 1):
        try:
            response = endpoint.client.chat.completions.create(model=endpoint.model, messages=messages, **kwargs)
            problem = _not_a_completion(response)
            if problem is None:
                return response
            # A web page or another API at the URL: every request would get the same, so the stage stops.
            if attempt == opts.max_retries:
                raise EndpointDown(f"the endpoint at {config.redact_url(endpoint.base_url)} does not answer as an "
                                   f"OpenAI-compatible chat API ({problem})")
            time.sleep(_backoff(attempt))
        except openai.APIConnectionError as exc:  # includes timeouts
            last = exc
            kind = "timeout" if isinstance(exc, openai.APITimeoutError) else "connection"
            if attempt == opts.max_retries:
                if kind == "connection":
                    raise EndpointDown(f"cannot reach the LLM endpoint at {config.redact_url(endpoint.base_url)} "
                                       f"after {attempt + 1} attempts") from None
                raise TransportError(f"timeout after {opts.request_timeout:g}s ({attempt + 1} attempts)") from None
            time.sleep(_backoff(attempt))
        except openai.RateLimitError as exc:
            last = exc
            if attempt == opts.max_retries:
                raise TransportError(f"rate limited (429) after {attempt + 1} attempts") from None
            wait = _retry_after(exc)
            time.sleep(min(60.0, wait) if wait is not None else _backoff(attempt))
        except openai.InternalServerError as exc:
            last = exc
            if attempt == opts.max_retries:
                raise TransportError(f"server error {exc.status_code} after {attempt + 1} attempts") from None
            time.sleep(_backoff(attempt))
        except openai.AuthenticationError:
            raise EndpointDown(f"the endpoint at {config.redact_url(endpoint.base_url)} rejected the API key (401)") from None
        except openai.NotFoundError:
            raise EndpointDown(f"model {endpoint.model!r} or its route not found at {config.redact_url(endpoint.base_url)} (404)") from None
        except openai.APIStatusError as exc:
            raise TransportError(f"request rejected with HTTP {exc.status_code}") from None
        except openai.APIResponseValidationError as exc:
            last = exc
            if attempt == opts.max_retries:
                raise TransportError("response was not valid JSON") from None
            time.sleep(_backoff(attempt))
    raise TransportError(f"no answer: {last}")


def _not_a_completion(response: Any) -> str | None:
    """None when a reply has the shape of a chat completion, else what it is instead. The client hands back a
    non-JSON body as text and JSON of another shape as it came, which would fail later as an attribute error."""
    if isinstance(response, (str, bytes)):
        return f"got text: {_first_words(response)}"
    choices = getattr(response, "choices", None)
    if not isinstance(choices, list):
        return "no list of choices in the reply"
    if any(not hasattr(choice, "message") for choice in choices):
        return "a choice without a message"
    return None


def _first_words(text: str | bytes, limit: int = 60) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    text = " ".join(text.split())
    return repr(text[:limit] + ("..." if len(text) > limit else ""))


def validate(instance: Any, schema: dict) -> str | None:
    """None when `instance` matches the JSON schema, else a short reason."""
    import jsonschema

    try:
        jsonschema.validate(instance, schema)
    except jsonschema.ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "root"
        return f"schema: {where}: {exc.message[:160]}"
    return None


def chat_json(endpoint: Endpoint, messages: list[dict], schema: dict, name: str = "answer",
              max_tokens: int = 512, temperature: float = 0.0, seed: int | None = None,
              **kwargs: Any) -> tuple[dict, Any]:
    """Ask for JSON matching `schema`; returns (parsed object, raw response). Raises LLMError."""
    problems = []
    # A caller-given seed lets several requests on one prompt sample differently (default: --seed).
    first_seed = endpoint.options.seed if seed is None else seed
    for attempt in range(endpoint.options.max_retries + 1):
        response = complete(endpoint, messages, response_format=json_format(name, schema), max_tokens=max_tokens,
                            temperature=temperature, seed=first_seed + attempt, **kwargs)
        choice = response.choices[0] if response.choices else None
        if choice is None or choice.message is None:
            problems.append("empty response")
            continue
        if choice.finish_reason == "length":
            problems.append(f"cut by max_tokens={max_tokens}")
            continue
        try:
            parsed = json.loads(choice.message.content or "")
        except json.JSONDecodeError:
            problems.append("invalid JSON")
            continue
        reason = validate(parsed, schema)
        if reason:
            problems.append(reason)
            continue
        return parsed, response
    raise LLMError("; ".join(dict.fromkeys(problems)))


T = TypeVar("T")
R = TypeVar("R")


def run_concurrently(fn: Callable[[T], R], items: Iterable[T], concurrency: int,
                     on_done: Callable[[T, R | None, Exception | None], None]) -> None:
    """Call fn on every item from `concurrency` threads; on_done(item, result, error) runs in this thread.

    An EndpointDown stops the work and is re-raised: nothing more can be done without the endpoint. The workers are
    daemon threads, so on Ctrl-C (or that error) this returns at once and the requests in flight are abandoned: a
    thread pool would wait for each of them, up to --request-timeout, even at the interpreter's exit.
    """
    todo: queue.SimpleQueue = queue.SimpleQueue()
    count = 0
    for item in items:
        todo.put(item)
        count += 1
    results: queue.SimpleQueue = queue.SimpleQueue()
    stop = threading.Event()

    def worker() -> None:
        while not stop.is_set():
            try:
                item = todo.get_nowait()
            except queue.Empty:
                return
            try:
                results.put((item, fn(item), None))
            except BaseException as exc:  # handed to on_done, which decides; a lost item would hang the wait below
                results.put((item, None, exc))

    for _ in range(min(max(1, concurrency), count)):
        threading.Thread(target=worker, daemon=True).start()
    try:
        for _ in range(count):
            while True:
                try:
                    item, result, error = results.get(timeout=0.5)  # a timed wait lets Ctrl-C in
                    break
                except queue.Empty:
                    continue
            if isinstance(error, EndpointDown):
                raise error
            on_done(item, result, error)
    finally:
        stop.set()  # workers finish the request in hand and take no other
