"""Fault harness for zyn_serve (not a timed test): concurrent clients, a stalled client, SIGTERM mid-load.

    python -m benchmarks.fault_serve               # 64 clients, a tiny random judge, SIGTERM after 10 s
    python -m benchmarks.fault_serve --model smollm2-135m-instruct  # the embedded judge
    python -m benchmarks.fault_serve --output benchmarks/results_serve.md   # append the report there

A server process (`zyn_serve.py`) is started on 127.0.0.1. --clients clients, each with its own
connection, send one-sample requests (OpenRLHF's format, a distinct text each) one after another, with no
retries. Meanwhile one raw connection sends its headers and part of a body and stalls: the server must
answer it 408 and close it within --body-timeout while the others are served. After --sigterm-after
seconds the server gets SIGTERM; each client stops at its first failure. Every request ends as:
answered (200 with one score), refused (the client saw an error: a status or a transport error) or lost
(neither, when the harness gives up at --deadline). The server's own counters, printed as it stops,
give the items it judged: judged = answered means that no answer was lost on the way and none was judged
twice. Exit status 1 if anything was lost or duplicated, or the stalled connection was not dropped in time.
"""

import argparse
import asyncio
import collections
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
from benchmarks.bench_serve import END, PROMPT, make_responses, uptime  # run as python -m benchmarks.fault_serve


def tiny_judge(folder: str) -> str:
    """A tiny random Llama judge (tests/tiny_models.py) saved in `folder`: milliseconds per batch."""
    from tests import tiny_models

    tokenizer = tiny_models.make_tokenizer()
    model = tiny_models.sharpen(tiny_models.tiny_llama(tokenizer), std=0.1)
    return tiny_models.save_tiny(model, tokenizer, folder)


def start_server(args, model: str):
    command = [sys.executable, str(ROOT / "zyn_serve.py"), "--model", model, "--question",
               "Is this movie review positive?", "--port", "0", "--batch-wait-ms", "5", "--max-batch", "64",
               "--header-timeout", str(args.body_timeout), "--body-timeout", str(args.body_timeout)]
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"})
    lines: list[str] = []
    for line in proc.stdout:
        lines.append(line)
        found = re.search(r"listening on (http://\S+)", line)
        if found:
            threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True).start()  # keep draining
            return proc, found.group(1), lines, command
    raise SystemExit(f"the server did not start (exit code {proc.wait()}):\n" + "".join(lines))


def stalled(base: str, results: dict):
    """A connection that sends its headers and 10 of 100 body bytes, then nothing: seconds to its close."""
    host, port = base.split("//")[1].split(":")
    sock = socket.create_connection((host, int(port)))
    start = results["stalled_at"] = time.monotonic()
    sock.sendall(b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 100\r\n\r\n{\"respons")
    sock.settimeout(120)
    answer = b""
    while chunk := sock.recv(4096):
        answer += chunk
    results["stalled_closed_s"] = time.monotonic() - start
    results["stalled_status"] = answer.split(b" ", 2)[1].decode() if answer else "none (closed)"
    sock.close()


async def load(base: str, texts: list[str], clients: int, proc, sigterm_after: float, deadline: float,
               stall: dict):
    outcome: dict[int, object] = {}  # request -> score, or the error the client saw
    times: dict[int, tuple[float, float]] = {}  # request -> (sent, ended)
    handed, twice = set(), []  # requests handed to a client; requests that ended twice
    todo, start = iter(range(len(texts))), time.monotonic()
    sigterm_at: list[float] = []
    context = ssl.create_default_context()  # shared: building one per client costs seconds

    async def client():
        async with httpx.AsyncClient(timeout=120, verify=context) as http:
            for i in todo:
                handed.add(i)
                body = {"query": [PROMPT + texts[i] + END], "prompts": [PROMPT], "labels": [None]}
                sent = time.monotonic()
                try:
                    reply = await http.post(base + "/score", json=body)
                    if reply.status_code == 200:
                        score = reply.json()["scores"]
                        assert len(score) == 1 and 0 <= score[0] <= 1, reply.text
                        result = score[0]
                    else:
                        result = f"HTTP {reply.status_code}"
                except httpx.TransportError as error:
                    result = type(error).__name__
                if i in outcome:
                    twice.append(i)
                outcome[i], times[i] = result, (sent, time.monotonic())
                if isinstance(result, str):
                    return  # the server is going away: this client stops

    async def terminate():
        await asyncio.sleep(1.0)  # under load: a connection that stalls
        staller = asyncio.create_task(asyncio.to_thread(stalled, base, stall))
        await asyncio.sleep(sigterm_after - 1.0)
        sigterm_at.append(time.monotonic())
        proc.send_signal(signal.SIGTERM)
        await staller

    tasks = [asyncio.create_task(client()) for _ in range(clients)]
    killer = asyncio.create_task(terminate())
    done, pending = await asyncio.wait(tasks, timeout=deadline)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    await killer
    for task in done:
        task.result()  # an assertion of a client fails the harness
    return outcome, times, handed, twice, start, sigterm_at[0]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="tiny", help="'tiny' (a random tiny Llama), or a judge name/folder")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--n", type=int, default=100_000, help="texts available (more than get sent)")
    parser.add_argument("--sigterm-after", type=float, default=10.0, help="seconds of load before SIGTERM (> 1)")
    parser.add_argument("--body-timeout", type=float, default=2.0, help="the server's header and body timeouts")
    parser.add_argument("--deadline", type=float, default=120.0, help="seconds before unfinished = lost")
    parser.add_argument("--output", default=None, help="append the report (markdown) to this file")
    args = parser.parse_args()

    load_before = uptime()
    with tempfile.TemporaryDirectory() as folder:
        model = tiny_judge(folder) if args.model == "tiny" else args.model
        proc, base, lines, command = start_server(args, model)
        try:
            httpx.post(base + "/score", json={"responses": ["warm-up"]}, timeout=120).raise_for_status()
            stall: dict = {}
            texts = make_responses(args.n, 12)
            outcome, times, handed, twice, t0, sigterm_at = asyncio.run(
                load(base, texts, args.clients, proc, args.sigterm_after, args.deadline, stall))
            code = proc.wait(60)
            exited = time.monotonic()
            load_during = uptime()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    time.sleep(0.5)  # the drain thread reads the last lines
    stopped = [line for line in lines if line.startswith("zyn_serve stopped: ")]
    judged = json.loads(stopped[-1].split(": ", 1)[1]) if stopped else {}

    answered = [i for i, r in outcome.items() if not isinstance(r, str)]
    refused = collections.Counter(r for r in outcome.values() if isinstance(r, str))
    lost = len(handed - set(outcome))
    judged_items = judged.get("items", 0) - 1  # less the warm-up request
    in_flight = [i for i, (sent, ended) in times.items() if sent < sigterm_at < ended]
    answered_in_flight = sum(1 for i in in_flight if not isinstance(outcome[i], str))
    after = [i for i in answered if times[i][1] > sigterm_at]
    stall_from = stall.get("stalled_at", 0.0)
    stall_to = stall_from + stall.get("stalled_closed_s", 0.0)
    served_meanwhile = sum(1 for i in answered if stall_from < times[i][1] < stall_to)
    ok = (lost == 0 and not twice and judged_items == len(answered) and stall.get("stalled_status") == "408"
          and stall.get("stalled_closed_s", 1e9) < args.body_timeout + 1)
    report = [
        f"## Fault harness: {args.clients} clients, SIGTERM after {args.sigterm_after:g} s, a stalled client",
        "",
        "    " + " ".join(["python", "benchmarks/fault_serve.py"] + sys.argv[1:]),
        "",
        f"judge `{args.model}`; server `zyn_serve.py --batch-wait-ms 5 --max-batch 64 --header-timeout "
        f"{args.body_timeout:g} --body-timeout {args.body_timeout:g}` on 127.0.0.1; each client its own "
        "connection, one sample per request, no retries, stops at its first failure.",
        "",
        "| requests sent | answered | refused (the client saw an error) | lost | ended twice "
        "| judged by the server | judged, not answered |",
        "|---:|---:|---:|---:|---:|---:|---:|",
        f"| {len(handed)} | {len(answered)} | {sum(refused.values())} | **{lost}** | **{len(twice)}** | "
        f"{judged_items} | **{judged_items - len(answered)}** |",
        "",
        f"- refused, by what the client saw: {dict(refused) or 'none'}",
        f"- in flight when SIGTERM came ({sigterm_at - t0:.1f} s into the load): {len(in_flight)}, of which "
        f"answered {answered_in_flight}; answered after SIGTERM: {len(after)}; server exit status {code} (uvicorn re-raises SIGTERM once it has finished), "
        f"{exited - sigterm_at:.2f} s after SIGTERM",
        f"- stalled connection (headers + 10 of 100 body bytes, then nothing): answered "
        f"{stall.get('stalled_status')} and closed after {stall.get('stalled_closed_s', float('nan')):.2f} s "
        f"(--body-timeout {args.body_timeout:g}); meanwhile {served_meanwhile} requests of the other "
        "clients were answered",
        f"- server counters at its stop: {judged or 'not printed'} (one warm-up request included)",
        f"- `uptime` before: {load_before}",
        f"- `uptime` after the load: {load_during}",
        f"- verdict: {'PASS' if ok else 'FAIL'} (0 lost, 0 ended twice, judged = answered, the stalled client "
        "answered 408 and dropped within its timeout)",
    ]
    print("\n".join(report))
    if args.output:
        with open(args.output, "a") as out:
            out.write("\n" + "\n".join(report) + "\n")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
