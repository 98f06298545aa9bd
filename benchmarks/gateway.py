"""Gateway throughput and latency: ``privet serve``'s predict and chat routes beside a bare echo app and a Presidio
proxy, each server its own uvicorn process on loopback, loaded from another process, in the same run.

Servers (each ``uvicorn.run`` with one worker, ``loop="uvloop"``, ``http="httptools"``, access log off, as
``privet serve`` runs it):

- privet: :func:`privet.serve.app.create_app` around a :class:`~privet.serve.gateway.Gateway` on a SQLite store
  (audit chain, group commit), the demo's MLP on 30 features (hidden 32, 2 classes) packed, signed and encrypted
  in the registry, one consumer API key of one tenant (with a rate limit and a query budget far above the load,
  so the limiter runs but never refuses);
- stand-in upstream: :func:`privet.serve.standin.standin_app` (quotes the last user message back);
- echo: a bare FastAPI app answering both request shapes with the request body (``await request.body()``);
- Presidio proxy: a FastAPI endpoint that runs Presidio's default ``AnalyzerEngine`` (spaCy en_core_web_sm 3.8.0,
  every predefined recognizer: it needs spaCy's NER for names) and ``AnonymizerEngine`` (replace by
  ``<ENTITY>``, not reversible, so nothing is restored) over each message, then forwards the request to the same
  stand-in upstream with httpx and returns its reply.

Load: ``benchmarks/gateway_load.py`` in its own process, 16 workers each on one keep-alive connection (a closed
loop: the next request leaves when the answer is read), HTTP/1.1 over uvloop streams with pre-encoded requests.
The full run also sends the echo load through one ``httpx.AsyncClient`` (pool of 16) to show what the raw client
saves. Targets:

- ``privet_predict``: ``POST /v1/predict/bench-mlp`` with ``Authorization: Bearer pvt_...``, one row of 30
  features per request (64 different rows, cycled);
- ``privet_chat``: ``POST /v1/chat/completions`` (not streamed), one user message of about 300 characters holding
  a person's name, an e-mail address and a phone number (64 different prompts, cycled); the gateway masks it,
  calls the stand-in, restores the reply;
- ``echo_predict``, ``echo_chat``: the same bodies to the echo app (the ceiling of server, client and loopback);
- ``presidio_chat``: the same chat bodies to the Presidio proxy.

Each target gets a warm-up run, then ``--repeats`` runs of ``--seconds`` each, the targets' order rotating from
repeat to repeat; figures are medians over the repeats and privet/Presidio ratios are taken repeat by repeat.
Every run reports requests per second, p50 and p99 latency, the server's CPU milliseconds per request (from
/proc, all its threads), the stand-in's and the load generator's. The machine's cores are shared by the servers
and the load generator (nothing pinned), so the load average is reported with the figures, and so is
``<target>_cpu_bound_rps``: 1000 over the server's CPU milliseconds per request, what one core given to that
server alone would carry, which other work on the machine hardly moves.

In process (reference): privet's :class:`~privet.serve.pii.SessionMasker` on each prompt (``mask_messages``),
milliseconds per prompt, and how many prompts had all three entities found; in a process of its own that builds
its analyzer while the servers start and measures once the loads are over.

Bars (full run): privet predict >= 1,000 requests/s with p99 <= 25 ms; privet chat >= 300 requests/s; no
request failed. ``--quick``: one run of 1.5 s per target, no warm-up run, no httpx comparison (a smoke run, no
bars). ``--targets`` runs a subset. ``--profile DIR`` runs the privet gateway under cProfile (CPU time of the
event loop's thread) and writes ``DIR/privet.prof`` (its figures are then not comparable; ``--targets
privet_chat`` profiles one route alone).

Run (Presidio comes with the ``bench`` extra)::

    .venv/bin/python -m pip install -e '.[bench]'
    .venv/bin/python benchmarks/gateway.py [--quick] --json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fastapi import Request, Response  # module level: FastAPI resolves the routes' annotations here

from common import emit, log, log_bars  # benchmarks/ is on sys.path when a benchmark runs

HERE = Path(__file__).resolve().parent
LOAD_SCRIPT = HERE / "gateway_load.py"
HOST = "127.0.0.1"
MODEL = "bench-mlp"
FEATURES = 30
CONCURRENCY = 16
MASTER_ENV = "PRIVET_BENCH_MASTER_KEY"
PREDICT_RPS_LIMIT = 1000.0
PREDICT_P99_LIMIT_MS = 25.0
CHAT_RPS_LIMIT = 300.0
FULL = {"warmup": 2.0, "seconds": 5.0, "repeats": 3}
QUICK = {"warmup": 0.0, "seconds": 1.5, "repeats": 1}  # each run still ramps up for 0.25 s
TARGETS = ("echo_predict", "privet_predict", "echo_chat", "privet_chat", "presidio_chat")
UVICORN = {"log_level": "warning", "access_log": False, "loop": "uvloop", "http": "httptools"}

# -- request bodies --------------------------------------------------------------------------------------------

NAMES = ["Maria Gonzalez", "James Thompson", "Emily Carter", "Robert Miller", "Sarah Johnson", "David Wilson",
         "Jennifer Davis", "Michael Brown", "Linda Martinez", "William Anderson", "Patricia Taylor",
         "Christopher Moore", "Jessica Jackson", "Daniel Harris", "Karen Clark", "Thomas Lewis"]  # fmt: skip
DOMAINS = ["example.com", "mail.example.org", "example.net", "corp.example.com"]
PHONES = ["415-555-0132", "(212) 555-0187", "+1 646 555 0199", "312.555.0143"]
TEMPLATES = [
    "Hello, my name is {name} and I am writing about my insurance claim from last month. Please reach me at "
    "{email} or call {phone} after five in the evening. Could you summarise the next steps, the documents I "
    "still need to send and how long it usually takes?",
    "Please draft a short, friendly reply to a customer called {name} who asked whether her order can still be "
    "changed. She wrote from {email} and left {phone} as a callback number. Keep it under four sentences and "
    "offer a new delivery date next week.",
    "Summarise this note for the team: {name} called on Tuesday about the late invoice and wants a corrected copy "
    "sent to {email}. He can be reached on {phone} during office hours. He sounded patient but expects an answer "
    "by the end of the week.",
    "Translate into plain English for a new colleague: the account of {name} was flagged after two failed "
    "logins; the owner confirmed by phone at {phone} and asked that the reset link go to {email} only. Nothing "
    "else needs to change on the account today.",
]  # fmt: skip


def prompts() -> list[str]:
    """64 English prompts of about 300 characters, each with a name, an e-mail address and a phone number."""
    out = []
    for i in range(64):
        name = NAMES[i % len(NAMES)]
        first, last = name.lower().split()
        email = f"{first}.{last}{i}@{DOMAINS[i % len(DOMAINS)]}"
        template = TEMPLATES[(i // len(NAMES)) % len(TEMPLATES)]
        out.append(template.format(name=name, email=email, phone=PHONES[(i // 3) % len(PHONES)]))
    return out


def chat_bodies() -> list[str]:
    return [json.dumps({"model": "standin", "messages": [{"role": "user", "content": p}]}) for p in prompts()]


def predict_bodies() -> list[str]:
    rng = random.Random(0)
    return [json.dumps({"inputs": [[round(rng.gauss(0, 1), 4) for _ in range(FEATURES)]]}) for _ in range(64)]


# -- servers (each runs in its own process: ``gateway.py --serve APP``) ----------------------------------------


def serve_echo(port: int) -> None:
    import uvicorn
    from fastapi import FastAPI

    app = FastAPI(title="echo")

    @app.post("/v1/predict/{model}")
    @app.post("/v1/chat/completions")
    async def echo(request: Request) -> Response:
        return Response(await request.body(), media_type="application/json")

    uvicorn.run(app, host=HOST, port=port, **UVICORN)


def serve_standin(port: int) -> None:
    import uvicorn

    from privet.serve.standin import standin_app

    uvicorn.run(standin_app(), host=HOST, port=port, **UVICORN)


def serve_privet(port: int, home: Path, upstream: str, profile: Path | None) -> None:
    import uvicorn

    from privet.crypto import Keyring, from_env_value
    from privet.models.registry import Registry
    from privet.serve.app import create_app
    from privet.serve.gateway import Gateway
    from privet.serve.settings import GatewaySettings
    from privet.store import Store

    store = Store.open(f"sqlite:///{home / 'privet.db'}")
    keyring = Keyring.unlock(store, from_env_value(os.environ[MASTER_ENV]))
    settings = GatewaySettings(upstream=upstream, models=[MODEL])
    app = create_app(Gateway(store, keyring, Registry(store, home / "registry"), settings))
    if profile is None:
        uvicorn.run(app, host=HOST, port=port, **UVICORN)
        return
    import cProfile
    import signal

    # uvicorn re-raises the SIGTERM it caught once it has shut down: exit through ``finally`` to write the stats.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    # CPU time of the event loop's thread: the cores are shared (wall time would mislead), and the audit writer's
    # thread is left out (its CPU would be charged to whatever the loop was running)
    profiler = cProfile.Profile(time.thread_time)
    profiler.enable()
    try:
        uvicorn.run(app, host=HOST, port=port, **UVICORN)
    finally:
        profiler.disable()
        profiler.dump_stats(str(profile))


def serve_presidio(port: int, upstream: str) -> None:
    import logging

    import httpx
    import uvicorn
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse

    from pii import LANGUAGE, SPACY_MODEL, offline_tldextract

    for name in ("presidio-analyzer", "presidio_analyzer", "presidio-anonymizer", "presidio_anonymizer"):
        logging.getLogger(name).setLevel(logging.ERROR)
    offline_tldextract()
    from presidio_analyzer import AnalyzerEngine
    from presidio_analyzer.nlp_engine import NlpEngineProvider
    from presidio_anonymizer import AnonymizerEngine

    configuration = {"nlp_engine_name": "spacy", "models": [{"lang_code": LANGUAGE, "model_name": SPACY_MODEL}]}
    nlp = NlpEngineProvider(nlp_configuration=configuration).create_engine()
    analyzer = AnalyzerEngine(nlp_engine=nlp, supported_languages=[LANGUAGE])
    anonymizer = AnonymizerEngine()
    warm = "Call John Smith at 415-555-0132 or john@example.com"
    anonymizer.anonymize(text=warm, analyzer_results=analyzer.analyze(text=warm, language=LANGUAGE))
    client: dict[str, httpx.AsyncClient] = {}

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> Any:
        client["upstream"] = httpx.AsyncClient(base_url=upstream, timeout=60)
        yield
        await client["upstream"].aclose()

    app = FastAPI(title="presidio proxy", lifespan=lifespan)

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        body = await request.json()
        for message in body["messages"]:
            text = message.get("content")
            if isinstance(text, str):
                found = analyzer.analyze(text=text, language=LANGUAGE)
                message["content"] = anonymizer.anonymize(text=text, analyzer_results=found).text
        reply = await client["upstream"].post("/chat/completions", json=body)
        return JSONResponse(reply.json(), status_code=reply.status_code)

    uvicorn.run(app, host=HOST, port=port, **UVICORN)


def serve(args: argparse.Namespace) -> int:
    if args.serve == "echo":
        serve_echo(args.port)
    elif args.serve == "standin":
        serve_standin(args.port)
    elif args.serve == "privet":
        serve_privet(args.port, Path(args.home), args.upstream, Path(args.profile) if args.profile else None)
    elif args.serve == "presidio":
        serve_presidio(args.port, args.upstream)
    return 0


# -- the run ---------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def setup(home: Path) -> str:
    """A migrated store, a keyring, the model in the registry and a tenant with one consumer key; the key."""
    import torch

    from privet.crypto import Keyring, from_env_value
    from privet.models.reference import ModelSpec, save_weights
    from privet.models.registry import Registry
    from privet.serve.keys import ApiKeys
    from privet.serve.limits import Limits
    from privet.store import Store

    store = Store.open(f"sqlite:///{home / 'privet.db'}")
    try:
        keyring = Keyring.initialize(store, from_env_value(os.environ[MASTER_ENV]))
        spec = ModelSpec("mlp", FEATURES, 2, hidden=32)
        torch.manual_seed(0)
        source = home / "model"
        source.mkdir()
        save_weights(spec.build(), source / "model.safetensors")
        Registry(store, home / "registry").add(source, name=MODEL, version="1", signer=keyring.signing_key(),
                                               keys=keyring, metadata=spec.to_metadata())  # fmt: skip
        keys = ApiKeys(store, keyring)
        keys.create_tenant("bench")
        limits = Limits(rate=1e6, burst=1_000_000, budget_queries=1_000_000_000)
        return keys.issue("bench", "consumer", limits=limits).token
    finally:
        store.close()


class Server:
    """One server process (this script with ``--serve``), its output in a log file."""

    def __init__(self, app: str, home: Path, extra: list[str]) -> None:
        self.app, self.port = app, free_port()
        self.log_path = home / f"{app}.log"
        command = [sys.executable, str(Path(__file__).resolve()), "--serve", app, "--port", str(self.port), *extra]
        with self.log_path.open("wb") as out:
            self.proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=os.environ.copy())

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def wait(self, deadline: float) -> None:
        """Until the port accepts connections (uvicorn binds it after the app's start-up)."""
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.app} server exited: {self.tail()}")
            with contextlib.suppress(OSError), socket.create_connection((HOST, self.port), timeout=0.5):
                return
            time.sleep(0.1)
        raise RuntimeError(f"{self.app} server did not start in time: {self.tail()}")

    def cpu_s(self) -> float:
        """User plus system CPU seconds of the process so far, all threads."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def tail(self) -> str:
        try:
            return " | ".join(self.log_path.read_text(errors="replace").strip().splitlines()[-5:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Load:
    """The load generator process, one JSON command and answer per run."""

    def __init__(self, targets_file: Path) -> None:
        self.proc = subprocess.Popen([sys.executable, str(LOAD_SCRIPT), str(targets_file)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)  # fmt: skip

    def run(self, target: str, warmup: float, seconds: float, client: str = "raw") -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        command = {"target": target, "warmup": warmup, "seconds": seconds, "client": client}
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the load generator exited")
        return json.loads(line)  # type: ignore[no-any-return]

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(20)


@contextlib.contextmanager
def servers(home: Path, targets: list[str]) -> Iterator[dict[str, Server]]:
    """The stand-in upstream always, echo and Presidio when a target needs them (privet is added once its store is
    ready); all of them stopped at the end."""
    started: dict[str, Server] = {}
    try:
        started["standin"] = Server("standin", home, [])
        if "presidio_chat" in targets:  # the slowest to start (spaCy): first
            started["presidio"] = Server("presidio", home, ["--upstream", f"{started['standin'].url}/v1"])
        if any(t.startswith("echo") for t in targets):
            started["echo"] = Server("echo", home, [])
        yield started
    finally:
        for server in reversed(started.values()):
            server.stop()


def check(servers_: dict[str, Server], token: str) -> dict[str, Any]:
    """One request of each kind before any load: they answer 200, privet masks upstream and restores exactly."""
    import httpx

    prompt = prompts()[0]
    chat = {"model": "standin", "messages": [{"role": "user", "content": prompt}]}
    auth = {"Authorization": f"Bearer {token}"}
    with httpx.Client(timeout=60) as client:
        predicted = client.post(f"{servers_['privet'].url}/v1/predict/{MODEL}", headers=auth,
                                json=json.loads(predict_bodies()[0]))  # fmt: skip
        if predicted.status_code != 200:
            raise RuntimeError(f"privet predict answered {predicted.status_code}: {predicted.text[:200]}")
        replied = client.post(f"{servers_['privet'].url}/v1/chat/completions", headers=auth, json=chat)
        if replied.status_code != 200:
            raise RuntimeError(f"privet chat answered {replied.status_code}: {replied.text[:200]}")
        result: dict[str, Any] = {
            "privet_restored_exactly": replied.json()["choices"][0]["message"]["content"] == "You said: " + prompt
        }
        if "presidio" in servers_:
            presidio = client.post(f"{servers_['presidio'].url}/v1/chat/completions", json=chat)
            if presidio.status_code != 200:
                raise RuntimeError(f"the Presidio proxy answered {presidio.status_code}: {presidio.text[:200]}")
            result["presidio_reply"] = presidio.json()["choices"][0]["message"]["content"][:120] + "..."
        if "echo" in servers_:
            echo = client.post(f"{servers_['echo'].url}/v1/chat/completions", json=chat)
            result["echo_ok"] = echo.status_code == 200 and echo.json() == chat
    if not result["privet_restored_exactly"]:
        raise RuntimeError("privet's chat reply was not restored exactly")
    return result


def mask_in_process(rounds: int) -> dict[str, Any]:
    """privet's masking alone, in this process: milliseconds per prompt, and detection of the three entities."""
    import secrets

    from privet.serve.pii import SessionMasker, default_pii_analyzer

    analyzer = default_pii_analyzer()
    texts = prompts()
    print("ready", flush=True)  # built (seconds) while the servers start; measured when the loads are done
    sys.stdin.readline()
    all_three = 0
    for text in texts:
        counts = SessionMasker(secrets.token_bytes(32), analyzer).mask_messages([{"role": "user", "content": text}])
        all_three += all(counts.counts.get(e, 0) >= 1 for e in ("PERSON", "EMAIL", "PHONE"))
    times = []
    for _ in range(rounds):
        for text in texts:
            began = time.perf_counter()
            SessionMasker(secrets.token_bytes(32), analyzer).mask_messages([{"role": "user", "content": text}])
            times.append(time.perf_counter() - began)
    times.sort()
    return {"mask_p50_ms": times[len(times) // 2] * 1000, "mask_p99_ms": times[int(0.99 * (len(times) - 1))] * 1000,
            "mask_mean_ms": statistics.fmean(times) * 1000, "prompts_all_three_found": all_three,
            "prompts": len(texts)}  # fmt: skip


def masking_reference(rounds: int) -> subprocess.Popen[str]:
    """The process of :func:`mask_in_process` (this script with ``--mask-reference``), started early."""
    command = [sys.executable, str(Path(__file__).resolve()), "--mask-reference", str(rounds)]
    return subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def masking_result(proc: subprocess.Popen[str]) -> dict[str, Any]:
    assert proc.stdin is not None and proc.stdout is not None
    if proc.stdout.readline().strip() != "ready":
        raise RuntimeError("the masking reference process failed")
    proc.stdin.write("go\n")
    proc.stdin.flush()
    result = json.loads(proc.stdout.readline())
    proc.wait(30)
    return result  # type: ignore[no-any-return]


def measure(load: Load, servers_: dict[str, Server], target: str, warmup: float, seconds: float,
            client: str = "raw") -> dict[str, Any]:  # fmt: skip
    """One run against ``target``, with the CPU its servers and the load generator spent per request."""
    involved = [servers_[target.split("_")[0]]] + ([servers_["standin"]] if target.endswith("_chat") and
                                                   not target.startswith("echo") else [])  # fmt: skip
    before = [s.cpu_s() for s in involved]
    result = load.run(target, warmup, seconds, client)
    spent = [s.cpu_s() - b for s, b in zip(involved, before, strict=True)]
    total = max(1, result["total"])
    result["server_cpu_ms"] = spent[0] / total * 1000
    if len(spent) > 1:
        result["upstream_cpu_ms"] = spent[1] / total * 1000
    result["client_cpu_ms"] = result["client_cpu_s"] / total * 1000
    result["load_1min"] = os.getloadavg()[0]
    return result


def summary(runs: list[dict[str, Any]]) -> dict[str, float]:
    keys = ("rps", "p50_ms", "p99_ms", "server_cpu_ms", "upstream_cpu_ms", "client_cpu_ms")
    out = {k: round(statistics.median(r[k] for r in runs), 3) for k in keys if k in runs[0]}
    out["errors"] = sum(r["errors"] for r in runs)
    # What one core given to the server alone would carry: robust to the sharing of the cores.
    out["cpu_bound_rps"] = round(1000 / out["server_cpu_ms"], 1) if out["server_cpu_ms"] > 0 else None
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="one short repeat (a smoke run, no bars)")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per target (median)")
    parser.add_argument("--seconds", type=float, default=None, help="seconds per timed run")
    parser.add_argument("--profile", type=Path, default=None, help="run the privet gateway under cProfile, stats here")
    parser.add_argument("--targets", default=",".join(TARGETS), help="comma-separated subset of the targets")
    parser.add_argument("--json", action="store_true", help="one JSON line on stdout")
    parser.add_argument("--serve", choices=["echo", "standin", "privet", "presidio"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--home", help=argparse.SUPPRESS)
    parser.add_argument("--upstream", help=argparse.SUPPRESS)
    parser.add_argument("--mask-reference", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        return serve(args)
    if args.mask_reference:
        print(json.dumps(mask_in_process(args.mask_reference)), flush=True)
        return 0
    started = time.perf_counter()
    sizes = dict(QUICK if args.quick else FULL)
    sizes.update({k: v for k, v in (("repeats", args.repeats), ("seconds", args.seconds)) if v is not None})
    chosen = [t for t in TARGETS if t in args.targets.split(",")]
    if not chosen or set(args.targets.split(",")) - set(TARGETS):
        parser.error(f"--targets: a comma-separated subset of {','.join(TARGETS)}")
    from privet.crypto import new_env_value

    os.environ.setdefault(MASTER_ENV, new_env_value())
    profile = None
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
        profile = args.profile.resolve() / "privet.prof"
    with tempfile.TemporaryDirectory(prefix="privet-gateway-bench-") as tmp:
        home = Path(tmp)
        with servers(home, chosen) as running:
            reference = masking_reference(1 if args.quick else 5)
            token = setup(home)  # while the other servers start
            log(f"gateway: store, keyring, model {MODEL} and key ready in {time.perf_counter() - started:.1f} s")
            running["privet"] = Server("privet", home, ["--home", str(home), "--upstream",
                                                        f"{running['standin'].url}/v1",
                                                        *(["--profile", str(profile)] if profile else [])])  # fmt: skip
            deadline = time.monotonic() + 180
            for server in running.values():
                server.wait(deadline)
            log(f"gateway: servers up at {time.perf_counter() - started:.1f} s")
            checked = check(running, token)
            log(f"gateway: privet restored exactly: {checked['privet_restored_exactly']}; Presidio's upstream saw "
                f"{checked.get('presidio_reply')!r}")  # fmt: skip
            targets = {
                "privet_predict": {"path": f"/v1/predict/{MODEL}", "bodies": predict_bodies(),
                                   "headers": {"Authorization": f"Bearer {token}"}},
                "privet_chat": {"path": "/v1/chat/completions", "bodies": chat_bodies(),
                                "headers": {"Authorization": f"Bearer {token}"}},
                "echo_predict": {"path": f"/v1/predict/{MODEL}", "bodies": predict_bodies(), "headers": {}},
                "echo_chat": {"path": "/v1/chat/completions", "bodies": chat_bodies(), "headers": {}},
                "presidio_chat": {"path": "/v1/chat/completions", "bodies": chat_bodies(), "headers": {}},
            }  # fmt: skip
            targets = {name: targets[name] for name in chosen}
            for name, target in targets.items():
                target.update(port=running[name.split("_")[0]].port, concurrency=CONCURRENCY)
            (home / "targets.json").write_text(json.dumps(targets))
            load = Load(home / "targets.json")
            try:
                for name in chosen if sizes["warmup"] > 0 else []:  # warm-up: caches, allocator, parsers
                    run = measure(load, running, name, 0.25, sizes["warmup"])
                    log(f"gateway: warm-up {name}: {run['rps']:,.0f} req/s")
                runs: dict[str, list[dict[str, Any]]] = {name: [] for name in chosen}
                for repeat in range(sizes["repeats"]):
                    shift = repeat % len(chosen)
                    for name in chosen[shift:] + chosen[:shift]:
                        run = measure(load, running, name, 0.25, sizes["seconds"])
                        runs[name].append(run)
                        log(f"gateway: {repeat + 1}/{sizes['repeats']} {name}: {run['rps']:,.0f} req/s, p50 "
                            f"{run['p50_ms']:.2f} ms, p99 {run['p99_ms']:.2f} ms, server {run['server_cpu_ms']:.2f}"
                            f" ms CPU/req, client {run['client_cpu_ms']:.3f} ms CPU/req, errors {run['errors']}, "
                            f"load {run['load_1min']:.2f}")  # fmt: skip
                httpx_echo = None
                if not args.quick and "echo_predict" in chosen:
                    httpx_echo = measure(load, running, "echo_predict", 0.5, sizes["seconds"], client="httpx")
                    log(f"gateway: echo_predict through httpx.AsyncClient: {httpx_echo['rps']:,.0f} req/s, client "
                        f"{httpx_echo['client_cpu_ms']:.3f} ms CPU/req")  # fmt: skip
            finally:
                load.close()
            masking = masking_result(reference)
            log(f"gateway: privet masking in process: p50 {masking['mask_p50_ms']:.2f} ms, p99 "
                f"{masking['mask_p99_ms']:.2f} ms per prompt; all three entities found in "
                f"{masking['prompts_all_three_found']}/{masking['prompts']} prompts")  # fmt: skip
    rows = {name: summary(r) for name, r in runs.items()}
    figures: dict[str, Any] = {}
    for name, row in rows.items():
        for key, value in row.items():
            figures[f"{name}_{key}"] = value
    for mine, theirs in (("privet_chat", "presidio_chat"), ("privet_predict", "echo_predict"),
                         ("privet_chat", "echo_chat")):  # fmt: skip
        if mine in runs and theirs in runs:  # pair by pair: the same repeat, close in time
            ratios = [a["rps"] / b["rps"] for a, b in zip(runs[mine], runs[theirs], strict=True) if b["rps"] > 0]
            figures[f"{mine}_vs_{theirs.split('_')[0]}_rps"] = round(statistics.median(ratios), 3) if ratios else None
    if httpx_echo is not None:
        figures["echo_predict_httpx_client_rps"] = round(httpx_echo["rps"], 1)
        figures["echo_predict_httpx_client_cpu_ms"] = round(httpx_echo["client_cpu_ms"], 3)
    figures.update({f"inprocess_{k}": round(v, 3) if isinstance(v, float) else v for k, v in masking.items()})
    figures["load_average_1min"] = round(statistics.median(r["load_1min"] for rs in runs.values() for r in rs), 2)
    figures["seconds"] = round(time.perf_counter() - started, 1)
    bars = {}
    if not args.quick and profile is None and chosen == list(TARGETS):
        predict, chat = rows["privet_predict"], rows["privet_chat"]
        bars["privet_predict_rps"] = {"value": predict["rps"], "limit": PREDICT_RPS_LIMIT,
                                      "ok": predict["rps"] >= PREDICT_RPS_LIMIT}  # fmt: skip
        bars["privet_predict_p99_ms"] = {"value": predict["p99_ms"], "limit": PREDICT_P99_LIMIT_MS,
                                         "ok": predict["p99_ms"] <= PREDICT_P99_LIMIT_MS}  # fmt: skip
        bars["privet_chat_rps"] = {"value": chat["rps"], "limit": CHAT_RPS_LIMIT, "ok": chat["rps"] >= CHAT_RPS_LIMIT}
        failed = sum(row["errors"] for row in rows.values())
        bars["failed_requests"] = {"value": failed, "limit": 0, "ok": failed == 0}
        log_bars("gateway", bars)
    notes = (
        f"loopback, one uvicorn worker per server (uvloop, httptools, no access log), closed-loop load of "
        f"{CONCURRENCY} keep-alive connections from another process (raw HTTP/1.1 on uvloop streams); medians of "
        f"{sizes['repeats']} runs of {sizes['seconds']:g} s after a {sizes['warmup']:g} s warm-up per target; "
        f"{os.cpu_count()} cores shared by servers and load generator, nothing pinned; privet on SQLite with its "
        "audit chain; Presidio: default AnalyzerEngine (spaCy en_core_web_sm 3.8.0) + AnonymizerEngine replace, "
        "no restoration" + ("; PROFILED: not comparable" if profile else "")
    )
    details = {"runs": runs, "check": checked, "httpx_echo": httpx_echo, "sizes": sizes,
               "load_average": os.getloadavg()}  # fmt: skip
    if args.json:
        emit("gateway", figures, bars, notes, details)
    return 0 if all(b["ok"] for b in bars.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
