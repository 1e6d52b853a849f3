"""Legitimate traffic alone, then alongside hostile clients: does the gateway keep serving?

    python bench/abuse.py [--duration 60] [--concurrency 8] [--max-rss-mb 6000] [--quick]

Starts a real `voxrouter serve` on a free loopback port with the shipped config
(config/default.yaml: `tts-1` -> local/piper, `tts-1-hd` -> local/kokoro) on a fresh SQLite
database in a temp dir, waits for /readyz (engines preloaded), and creates two API keys in
two organizations: a legitimate one (per-minute limits raised so that its own rate limits
are not what is measured) and a hostile one (the operator's default limits).

Phase "alone": `--concurrency` clients loop `POST /v1/audio/speech` (`tts-1`, voice alloy,
a normal English sentence, pcm) for `--duration` seconds, each reading the whole stream;
per request: success (200 and a non-empty body), time to first body byte, total time.

Phase "attack": the same legitimate traffic for the same duration, alongside the hostile
clients of issue 14's probe table, each bounded in count and time and stopping at the end
of the phase by itself:

    cjk_piper      `tts-1` with 3,000 CJK characters and no spaces
    cjk_kokoro     `tts-1-hd` with 1,002 CJK characters
    bad_text       "Hello ı.e. world", emoji-only and private-use-only input, on both engines
    slowloris      connections sending one header byte every 5 s (raw sockets)
    never_read     clients that start `tts-1` streams and never read (raw sockets, tiny buffers)
    huge_header    a 64 MB request header (raw sockets)
    fdfa           20 x U+FDFA on `tts-1-hd`
    speed_bool     `"speed": true`
    unlisted_model `openai/tts-1-hd-1106`
    instructions   `provider_options.instructions` of 200,000 characters

The gateway's RSS (VmRSS of it and its children, from /proc) is sampled every 0.5 s
throughout; past `--max-rss-mb` the gateway is killed (rather than letting the machine run
out of memory) and that is reported as a failure.

Prints, per phase: legitimate requests, success rate, TTFB p50/p99, total p50/p99 and the
gateway's peak RSS; then issue 14's targets (success under attack >= 99 %, TTFB p99 under
attack <= 2x alone) with PASS/FAIL, the hostile outcomes by status per probe kind, and
whether a legitimate request is served after the attack. Exits 0 whatever the figures,
1 if the gateway died (or was killed at the RSS cap).

`--quick`: 10 s phases and fewer hostile connections, to check that it runs end to end.
`--probes cjk_piper,slowloris`: only those hostile kinds (to find which one hurts).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
SHIPPED_CONFIG = ROOT / "config" / "default.yaml"
SPEECH = "/v1/audio/speech"

SENTENCES = [
    "The quick brown fox jumps over the lazy dog, then naps in the warm afternoon sun.",
    "Please remember to water the plants on the balcony before you leave for work today.",
    "Our train leaves the station at half past nine, so we should have breakfast early.",
    "She opened the window, listened to the rain for a while, and went back to her book.",
]
# 3,000 / 1,002 CJK characters with no spaces (and no punctuation the splitter knows).
CJK = "我们今天在公园里散步天气很好阳光明媚大家都很开心孩子们在草地上玩耍老人们在树下下棋"
PRIVATE_USE = "".join(chr(0xE000 + i) for i in range(40))
EMOJI = "😀🎉🙈🚀🔥👍🌈🍕" * 5
PROBES = ("cjk_piper", "cjk_kokoro", "bad_text", "slowloris", "never_read", "huge_header", "fdfa", "speed_bool",
          "unlisted_model", "instructions")


@dataclass
class Plan:
    duration: float
    slowloris: int = 200
    never_read: int = 8
    huge_header: int = 4
    cjk_piper: int = 2
    cjk_kokoro: int = 2
    fdfa: int = 2
    bad_text_max: int = 60
    small_probe: int = 5  # speed_bool, unlisted_model, instructions each
    probes: tuple[str, ...] = ()


# ---------------------------------------------------------------------------------------
# The gateway process and its memory


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _clean_env(**extra: str) -> dict[str, str]:
    """This environment without provider keys or VoxRouter settings, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.endswith(("_API_KEY", "_BASE_URL")) and not k.startswith("VOXROUTER_")}
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


def _tree_rss_kb(pid: int) -> int | None:
    """VmRSS of `pid` and all its descendants, in kB; None once `pid` is gone."""
    children: dict[int, list[int]] = defaultdict(list)
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
            ppid = int(stat[stat.rindex(b")") + 2 :].split()[1])
            children[ppid].append(int(entry))
        except (OSError, ValueError, IndexError):
            continue
    total, todo, seen = 0, [pid], set()
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        try:
            with open(f"/proc/{p}/status", encoding="ascii", errors="replace") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            if p == pid:
                return None
        todo.extend(children.get(p, ()))
    return total


class RssWatch:
    """Samples the gateway's RSS every 0.5 s in a thread (so a busy event loop cannot delay
    it); SIGKILLs the gateway's process group when it passes the cap."""

    def __init__(self, proc: subprocess.Popen, cap_mb: float) -> None:
        self.proc = proc
        self.cap_kb = cap_mb * 1024
        self.phase = "idle"
        self.peaks: dict[str, int] = defaultdict(int)
        self.samples: list[tuple[float, str, int]] = []
        self.killed_at_kb: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> "RssWatch":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def sample(self) -> int | None:
        kb = _tree_rss_kb(self.proc.pid)
        if kb is not None:
            self.samples.append((time.monotonic(), self.phase, kb))
            self.peaks[self.phase] = max(self.peaks[self.phase], kb)
        return kb

    def _run(self) -> None:
        while not self._stop.is_set():
            kb = self.sample()
            if kb is None or self.proc.poll() is not None:
                return
            if kb > self.cap_kb and self.killed_at_kb is None:
                self.killed_at_kb = kb
                _kill_group(self.proc)
                return
            self._stop.wait(0.5)


def _kill_group(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # its own session: only what we started
        except ProcessLookupError:
            pass


def _create_key(env: dict[str, str], org: str, extra: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "voxrouter.cli", "admin", "create-key", "--org", org, "--name", "bench", "--credit-usd", "5", *extra],
        env=env, cwd=ROOT, capture_output=True, text=True,
    )


def _raised_limits_config(tmp: Path) -> Path:
    """The shipped config with the default per-minute limits raised (used only if the CLI
    refuses key limits above the organization's)."""
    import yaml

    config = yaml.safe_load(SHIPPED_CONFIG.read_text(encoding="utf-8"))
    config.setdefault("limits", {}).setdefault("defaults", {}).update(
        {"requests_per_minute": 10_000_000, "characters_per_minute": 1_000_000_000}
    )
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path


def _wait_ready(url: str, proc: subprocess.Popen, timeout_s: float = 180) -> float:
    started = time.monotonic()
    last = ""
    while time.monotonic() < started + timeout_s:
        if proc.poll() is not None:
            raise RuntimeError(f"gateway exited with {proc.returncode}")
        try:
            response = httpx.get(url + "/readyz", timeout=2)
            if response.status_code == 200:
                return time.monotonic() - started
            last = response.text
        except httpx.HTTPError as exc:
            last = type(exc).__name__
        time.sleep(0.2)
    raise RuntimeError(f"gateway not ready after {timeout_s:g}s: {last}")


# ---------------------------------------------------------------------------------------
# Legitimate traffic


@dataclass
class Result:
    ok: bool
    outcome: str  # "200", "503", "ReadTimeout", "200 empty", ...
    ttfb: float | None
    total: float
    at: float = 0.0  # when it started (time.monotonic())
    audio_s: float = 0.0  # seconds of 24 kHz s16 PCM received


async def _legit_one(client: httpx.AsyncClient, url: str, key: str, text: str, limit_s: float) -> Result:
    body = {"model": "tts-1", "voice": "alloy", "input": text, "response_format": "pcm"}
    started = time.perf_counter()
    ttfb = None
    size = 0
    status = None

    async def go() -> None:
        nonlocal ttfb, size, status
        async with client.stream("POST", url + SPEECH, json=body, headers={"Authorization": f"Bearer {key}"}) as response:
            status = response.status_code
            async for chunk in response.aiter_raw():
                if chunk:
                    if ttfb is None:
                        ttfb = time.perf_counter() - started
                    size += len(chunk)

    try:
        await asyncio.wait_for(go(), limit_s)
    except asyncio.TimeoutError:
        return Result(False, f"{status or 'no status'} over {limit_s:g}s", ttfb, time.perf_counter() - started)
    except httpx.HTTPError as exc:
        return Result(False, f"{status} {type(exc).__name__}" if status else type(exc).__name__, ttfb, time.perf_counter() - started)
    total = time.perf_counter() - started
    at = time.monotonic() - total
    if status == 200 and size > 0:
        return Result(True, "200", ttfb, total, at, size / 48_000)
    return Result(False, f"{status} empty" if status == 200 else str(status), ttfb, total, at)


async def legit_phase(url: str, key: str, concurrency: int, duration: float, stop: asyncio.Event, warmup: int = 0,
                      pace: str = "fast") -> list[Result]:
    """`concurrency` clients loop until `duration` has passed (or `stop`); a request still in
    flight at the end may finish within a grace period (then it counts as failed)."""
    results: list[Result] = []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    timeout = httpx.Timeout(30, connect=10)
    async with httpx.AsyncClient(timeout=timeout, limits=limits) as client:
        if warmup:
            warm = await asyncio.gather(*(_legit_one(client, url, key, SENTENCES[i % len(SENTENCES)], 60) for i in range(warmup)))
            failed = Counter(r.outcome for r in warm if not r.ok)
            print(f"warm-up: {warmup - sum(failed.values())}/{warmup} served"
                  + (f"; failures: {dict(failed)}" if failed else ""), flush=True)
            if sum(failed.values()) == warmup:
                raise RuntimeError(f"could not serve: no legitimate request served in the warm-up ({dict(failed)})")
        deadline = time.monotonic() + duration

        async def worker(n: int) -> None:
            i = n
            if pace == "listen":  # independent listeners: arrivals spread over a clip's length, not in step
                await asyncio.sleep(n * 4.0 / concurrency)
            while time.monotonic() < deadline and not stop.is_set():
                grace = max(deadline - time.monotonic(), 0) + 30
                result = await _legit_one(client, url, key, SENTENCES[i % len(SENTENCES)], min(60, grace))
                results.append(result)
                i += 1
                if pace == "listen" and result.ok:  # a player: the next request when this clip has played
                    await asyncio.sleep(max(0.0, result.audio_s - result.total))

        await asyncio.gather(*(worker(n) for n in range(concurrency)))
    return results


# ---------------------------------------------------------------------------------------
# Hostile clients


class Outcomes:
    def __init__(self) -> None:
        self.by_kind: dict[str, Counter] = defaultdict(Counter)

    def add(self, kind: str, outcome: str) -> None:
        self.by_kind[kind][outcome] += 1


async def _hostile_http(client: httpx.AsyncClient, url: str, key: str, body: dict, deadline: float) -> str:
    """One request, the whole body read and discarded, bounded by `deadline`."""
    status = None
    size = 0

    async def go() -> None:
        nonlocal status, size
        async with client.stream("POST", url + SPEECH, json=body, headers={"Authorization": f"Bearer {key}"}) as response:
            status = response.status_code
            async for chunk in response.aiter_raw():
                size += len(chunk)

    try:
        await asyncio.wait_for(go(), max(deadline - time.monotonic(), 0.01))
    except asyncio.TimeoutError:
        return f"{status} unfinished at end" if status else "no answer by end"
    except httpx.HTTPError as exc:
        return f"{status} then {type(exc).__name__}" if status else type(exc).__name__
    if status == 200:
        return "200, empty" if size == 0 else "200, audio"
    return str(status)


async def _http_probe(kind: str, out: Outcomes, client: httpx.AsyncClient, url: str, key: str, bodies: list[dict],
                      count: int, interval: float, deadline: float) -> None:
    for i in range(count):
        if time.monotonic() >= deadline:
            return
        started = time.monotonic()
        out.add(kind, await _hostile_http(client, url, key, bodies[i % len(bodies)], deadline))
        await asyncio.sleep(max(0.0, interval - (time.monotonic() - started)))


def _raw_request(host: str, key: str, body: dict) -> bytes:
    data = json.dumps(body).encode()
    head = (
        f"POST {SPEECH} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
    ).encode()
    return head + data


async def _raw_socket(port: int, rcvbuf: int | None = None) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    return sock


def _status_of(data: bytes) -> str:
    if data.startswith(b"HTTP/"):
        parts = data.split(b"\r\n", 1)[0].split()
        if len(parts) >= 2:
            return parts[1].decode("ascii", "replace")
    return "closed, no response" if not data else "garbage"


async def _recv_head(sock: socket.socket, limit_s: float) -> tuple[bytes, bool]:
    """What arrives within `limit_s` (up to a status line); and whether the peer closed."""
    loop = asyncio.get_running_loop()
    data = b""
    end = time.monotonic() + limit_s
    while time.monotonic() < end and b"\r\n" not in data:
        try:
            chunk = await asyncio.wait_for(loop.sock_recv(sock, 4096), max(end - time.monotonic(), 0.01))
        except asyncio.TimeoutError:
            break
        except OSError:
            return data, True
        if not chunk:
            return data, True
        data += chunk
    return data, False


async def _slowloris_one(kind: str, out: Outcomes, port: int, deadline: float, every_s: float) -> None:
    loop = asyncio.get_running_loop()
    try:
        sock = await _raw_socket(port)
    except OSError as exc:
        out.add(kind, f"connect {type(exc).__name__}")
        return
    started = time.monotonic()
    try:
        await loop.sock_sendall(sock, f"POST {SPEECH} HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode())
        trickle = b"X-Slow: " + b"a" * 10_000
        reader = asyncio.ensure_future(_recv_head(sock, deadline - time.monotonic() + 1))
        i = 0
        while not reader.done() and time.monotonic() < deadline:
            try:
                await loop.sock_sendall(sock, trickle[i % len(trickle) : i % len(trickle) + 1])
            except OSError:
                break
            i += 1
            await asyncio.wait([reader], timeout=min(every_s, max(deadline - time.monotonic(), 0)))
        if reader.done():
            data, closed = reader.result()
            held = time.monotonic() - started
            out.add(kind, f"{_status_of(data)} after {_bucket(held)}" if data else f"closed by server after {_bucket(held)}")
        else:
            reader.cancel()
            out.add(kind, "held open to the end")
    finally:
        sock.close()


def _bucket(seconds: float) -> str:
    for edge in (1, 5, 10, 15, 20, 30, 60, 120):
        if seconds <= edge:
            return f"<={edge}s"
    return ">120s"


async def _never_read_one(kind: str, out: Outcomes, port: int, key: str, deadline: float) -> None:
    loop = asyncio.get_running_loop()
    try:
        sock = await _raw_socket(port, rcvbuf=4096)
    except OSError as exc:
        out.add(kind, f"connect {type(exc).__name__}")
        return
    try:
        # ~3,000 characters of English: minutes of audio, far more than the socket buffers hold.
        text = " ".join(SENTENCES) * 9
        await loop.sock_sendall(sock, _raw_request(f"127.0.0.1:{port}", key, {"model": "tts-1", "voice": "alloy", "input": text, "response_format": "pcm"}))
        await asyncio.sleep(max(deadline - time.monotonic(), 0))
        # Only now look: the status line, and whether the server gave up on us meanwhile
        # (draining a little; a closed socket shows EOF after the buffered bytes).
        data, _ = await _recv_head(sock, 2)
        closed = False
        end = time.monotonic() + 2
        while time.monotonic() < end:
            try:
                chunk = await asyncio.wait_for(loop.sock_recv(sock, 1 << 16), 0.3)
            except asyncio.TimeoutError:
                break
            except OSError:  # reset: the write deadline dropped us
                closed = True
                break
            if not chunk:
                closed = True
                break
        out.add(kind, f"{_status_of(data)}, {'dropped by server' if closed else 'still streaming at end'}")
    except OSError as exc:
        out.add(kind, type(exc).__name__)
    finally:
        sock.close()


async def _huge_header_one(kind: str, out: Outcomes, port: int, key: str, deadline: float, pad: memoryview) -> None:
    loop = asyncio.get_running_loop()
    try:
        sock = await _raw_socket(port)
    except OSError as exc:
        out.add(kind, f"connect {type(exc).__name__}")
        return
    try:
        reader = asyncio.ensure_future(_recv_head(sock, max(deadline - time.monotonic(), 1)))
        sent_all = True
        try:
            await loop.sock_sendall(sock, f"POST {SPEECH} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\nX-Pad: ".encode())
            for offset in range(0, len(pad), 1 << 20):
                if reader.done():
                    sent_all = False
                    break
                await asyncio.wait_for(loop.sock_sendall(sock, pad[offset : offset + (1 << 20)]), max(deadline - time.monotonic(), 0.01))
            if sent_all:
                body = b'{"model":"tts-1","voice":"alloy","input":"Hi.","response_format":"pcm"}'
                await loop.sock_sendall(sock, b"\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        except (OSError, asyncio.TimeoutError):
            sent_all = False
        try:
            data, closed = await asyncio.wait_for(reader, max(deadline - time.monotonic(), 0.01))
        except asyncio.TimeoutError:
            data, closed = b"", False
        status = _status_of(data) if data or closed else "no response by end"
        out.add(kind, f"{status}{'' if sent_all else ' (cut off while sending)'}")
    finally:
        sock.close()


async def attack(url: str, port: int, key: str, plan: Plan, deadline: float, out: Outcomes, stop: asyncio.Event) -> None:
    d = deadline
    pad = memoryview(b"a" * (64 << 20) if "huge_header" in plan.probes else b"")
    timeout = httpx.Timeout(120, connect=10)
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=16)
    async with httpx.AsyncClient(timeout=timeout, limits=limits) as client:
        def body(model: str, text: str, **extra: object) -> dict:
            return {"model": model, "voice": "alloy", "input": text, "response_format": "pcm", **extra}

        bad = [body(m, t) for t in ("Hello ı.e. world", EMOJI, PRIVATE_USE) for m in ("tts-1", "tts-1-hd")]
        tasks = {
            "cjk_piper": lambda: [_http_probe("cjk_piper", out, client, url, key, [body("tts-1", (CJK * 100)[:3000])], plan.cjk_piper, 0, d)],
            "cjk_kokoro": lambda: [_http_probe("cjk_kokoro", out, client, url, key, [body("tts-1-hd", (CJK * 40)[:1002])], plan.cjk_kokoro, 0, d)],
            "bad_text": lambda: [_http_probe("bad_text", out, client, url, key, bad, plan.bad_text_max, 1.0, d)],
            "fdfa": lambda: [_http_probe("fdfa", out, client, url, key, [body("tts-1-hd", "\ufdfa" * 20)], plan.fdfa, 0, d)],
            "speed_bool": lambda: [_http_probe("speed_bool", out, client, url, key, [body("tts-1", "Hello there.", speed=True)], plan.small_probe, 1.0, d)],
            "unlisted_model": lambda: [_http_probe("unlisted_model", out, client, url, key, [body("openai/tts-1-hd-1106", "Hello there.")], plan.small_probe, 1.0, d)],
            "instructions": lambda: [_http_probe("instructions", out, client, url, key,
                                                 [body("tts-1", "Hi", provider_options={"instructions": "Speak slowly. " * 14_286})], plan.small_probe, 1.0, d)],
            "slowloris": lambda: [_slowloris_one("slowloris", out, port, d, 5.0) for _ in range(plan.slowloris)],
            "never_read": lambda: [_never_read_one("never_read", out, port, key, d) for _ in range(plan.never_read)],
            "huge_header": lambda: [_huge_header_one("huge_header", out, port, key, d, pad) for _ in range(plan.huge_header)],
        }
        running = [asyncio.ensure_future(t) for kind in plan.probes for t in tasks[kind]()]
        # Everything is bounded by the deadline; a little slack for the final look, then cancel.
        stopped = asyncio.ensure_future(stop.wait())  # the gateway died: no point going on
        await asyncio.wait([asyncio.gather(*running, return_exceptions=True), stopped],
                           timeout=max(deadline - time.monotonic(), 0) + 10, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        for task in running:
            if not task.done():
                task.cancel()
        results = await asyncio.gather(*running, return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException) and not isinstance(r, asyncio.CancelledError):
                out.add("bench errors", f"{type(r).__name__}: {r}"[:80])


# ---------------------------------------------------------------------------------------
# Report


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[max(0, math.ceil(q * len(values)) - 1)]


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.0f}ms"


@dataclass
class PhaseStats:
    name: str
    results: list[Result] = field(default_factory=list)
    peak_kb: int = 0

    @property
    def sent(self) -> int:
        return len(self.results)

    @property
    def success(self) -> float | None:
        return sum(r.ok for r in self.results) / len(self.results) if self.results else None

    def ttfb(self, q: float) -> float | None:
        return _pct([r.ttfb for r in self.results if r.ok and r.ttfb is not None], q)

    def total(self, q: float) -> float | None:
        return _pct([r.total for r in self.results if r.ok], q)


def report(phases: list[PhaseStats], idle_kb: int, peak_kb: int, outcomes: Outcomes, after: str, died: str | None) -> None:
    print()
    print(f"gateway RSS: idle {idle_kb / 1024:.0f} MB, peak overall {peak_kb / 1024:.0f} MB")
    print(f"{'phase':>8} {'sent':>6} {'success':>8} {'TTFB p50':>9} {'TTFB p99':>9} {'total p50':>10} {'total p99':>10} {'peak RSS':>9}")
    for p in phases:
        success = "-" if p.success is None else f"{p.success * 100:.1f}%"
        print(
            f"{p.name:>8} {p.sent:>6} {success:>8} {_ms(p.ttfb(0.5)):>9} {_ms(p.ttfb(0.99)):>9}"
            f" {_ms(p.total(0.5)):>10} {_ms(p.total(0.99)):>10} {p.peak_kb / 1024:>7.0f}MB"
        )
    for p in phases:
        if p.results:  # where in the phase the slowest first bytes were (a burst at its start, or throughout)
            start = min(r.at for r in p.results)
            slow = sorted((r for r in p.results if r.ttfb is not None), key=lambda r: -r.ttfb)[:5]  # type: ignore[operator]
            print(f"  {p.name} slowest TTFB: " + ", ".join(f"{r.ttfb * 1000:.0f}ms at {r.at - start:.0f}s" for r in slow))  # type: ignore[operator]
            windows: dict[int, list[float]] = defaultdict(list)
            for r in p.results:
                if r.ttfb is not None:
                    windows[int((r.at - start) // 10) * 10].append(r.ttfb)
            print(f"  {p.name} TTFB p99 by 10 s: " + ", ".join(f"{w}s {_ms(_pct(v, 0.99))}" for w, v in sorted(windows.items())))
    for p in phases:
        failures = Counter(r.outcome for r in p.results if not r.ok)
        if failures:
            print(f"  {p.name} failures: " + ", ".join(f"{k}: {v}" for k, v in failures.most_common()))
    alone = next((p for p in phases if p.name == "alone"), None)
    under = next((p for p in phases if p.name == "attack"), None)
    print()
    dead = " (the gateway died)" if died else ""
    if under is not None and under.success is not None:
        ok = under.success >= 0.99 and died is None
        print(f"legitimate success under attack: {under.success * 100:.1f}% (target >= 99%) {'PASS' if ok else 'FAIL' + dead}")
    else:
        print("legitimate success under attack: no requests (target >= 99%) FAIL")
    a99, u99 = (alone.ttfb(0.99) if alone else None), (under.ttfb(0.99) if under else None)
    if a99 and u99:
        ratio = u99 / a99
        print(f"TTFB p99 under attack / alone: {ratio:.2f}x (target <= 2x) {'PASS' if ratio <= 2 and died is None else 'FAIL' + dead}")
    else:
        print("TTFB p99 under attack / alone: n/a (no successful requests in a phase) FAIL")
    print(f"after the attack: {after}")
    if outcomes.by_kind:
        print()
        print("hostile outcomes (by probe kind):")
        for kind, counter in outcomes.by_kind.items():
            print(f"  {kind:>14}: " + ", ".join(f"{k} x{v}" for k, v in sorted(counter.items(), key=lambda kv: -kv[1])))
    if died:
        print()
        print(f"GATEWAY FAILED: {died}")


# ---------------------------------------------------------------------------------------


async def _after_check(url: str, key: str) -> str:
    """Is a legitimate request served once the attack has stopped? (up to 30 s of tries)"""
    started = time.monotonic()
    last = ""
    async with httpx.AsyncClient(timeout=httpx.Timeout(30, connect=5)) as client:
        while time.monotonic() < started + 30:
            r = await _legit_one(client, url, key, SENTENCES[0], 30)
            if r.ok:
                return f"served {time.monotonic() - started:.1f}s after the phase ended (TTFB {_ms(r.ttfb)})"
            last = r.outcome
            await asyncio.sleep(1)
    return f"NOT served within 30s (last: {last})"


async def run_phases(url: str, port: int, keys: dict[str, str], args: argparse.Namespace, plan: Plan,
                     watch: RssWatch, proc: subprocess.Popen) -> tuple[list[PhaseStats], Outcomes, str]:
    stop = asyncio.Event()

    async def watchdog() -> None:
        while not stop.is_set():
            if proc.poll() is not None:
                stop.set()
                return
            await asyncio.sleep(0.5)

    async def lag_monitor() -> None:
        """How late this bench's own event loop wakes up: a stalled client would flatter nobody."""
        while not stop.is_set():
            before = time.monotonic()
            await asyncio.sleep(0.1)
            lag[watch.phase] = max(lag.get(watch.phase, 0.0), time.monotonic() - before - 0.1)

    lag: dict[str, float] = {}
    dog = asyncio.ensure_future(watchdog())
    lagger = asyncio.ensure_future(lag_monitor())
    phases: list[PhaseStats] = []
    outcomes = Outcomes()
    after = "not checked"
    try:
        watch.phase = "warmup"
        await legit_phase(url, keys["legit"], args.concurrency, 0, stop, warmup=2 * args.concurrency)
        print(f"phase alone: {args.concurrency} clients for {plan.duration:g}s", flush=True)
        watch.phase = "alone"
        alone = PhaseStats("alone", await legit_phase(url, keys["legit"], args.concurrency, plan.duration, stop, pace=args.pace))
        phases.append(alone)
        if stop.is_set():
            return phases, outcomes, after
        print(f"phase attack: {args.concurrency} clients for {plan.duration:g}s alongside the hostile mix", flush=True)
        watch.phase = "attack"
        deadline = time.monotonic() + plan.duration
        legit, _ = await asyncio.gather(
            legit_phase(url, keys["legit"], args.concurrency, plan.duration, stop, pace=args.pace),
            attack(url, port, keys["hostile"], plan, deadline, outcomes, stop),
        )
        phases.append(PhaseStats("attack", legit))
        watch.phase = "after"
        if not stop.is_set():
            after = await _after_check(url, keys["legit"])
    finally:
        stop.set()
        await dog
        await lagger
        print("bench client's own event-loop lag, max: " + ", ".join(f"{k} {v * 1000:.0f}ms" for k, v in lag.items()), flush=True)
    return phases, outcomes, after


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=None, help="seconds per phase (default 60; 10 with --quick)")
    parser.add_argument("--concurrency", type=int, default=8, help="legitimate clients")
    parser.add_argument("--pace", choices=("fast", "listen"), default="fast",
                        help="legitimate clients read as fast as they can and ask again at once (fast), or ask again "
                             "once the clip would have played (listen: a player)")
    parser.add_argument("--max-rss-mb", type=float, default=6000, help="kill the gateway past this RSS (it and its children)")
    parser.add_argument("--quick", action="store_true", help="10 s phases, fewer hostile connections")
    parser.add_argument("--probes", default=",".join(PROBES), help=f"comma-separated subset of: {','.join(PROBES)} (default: all)")
    args = parser.parse_args()
    probes = tuple(p.strip() for p in args.probes.split(",") if p.strip())
    unknown = set(probes) - set(PROBES)
    if unknown:
        parser.error(f"unknown probes: {', '.join(sorted(unknown))}")
    duration = args.duration if args.duration is not None else (10.0 if args.quick else 60.0)
    plan = Plan(duration=duration, probes=probes)
    if args.quick:
        plan = Plan(duration=duration, slowloris=50, never_read=8, huge_header=2, cjk_piper=1, cjk_kokoro=1, fdfa=1,
                    bad_text_max=20, small_probe=3, probes=probes)

    tmp = Path(tempfile.mkdtemp(prefix="voxrouter-abuse-"))
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = _clean_env(VOXROUTER_CONFIG=str(SHIPPED_CONFIG), VOXROUTER_DATABASE_URL=f"sqlite:///{tmp}/abuse.db")
    legit_limits = ["--requests-per-minute", "10000000", "--characters-per-minute", "1000000000"]
    done = _create_key(env, "legit", legit_limits)
    if done.returncode != 0:
        # Key limits above the organization's refused: raise the defaults in a copy instead.
        print(f"create-key refused raised key limits ({done.stderr.strip()[-200:]}); using a config copy with raised defaults")
        env["VOXROUTER_CONFIG"] = str(_raised_limits_config(tmp))
        done = _create_key(env, "legit", [])
    done.check_returncode()
    keys = {"legit": done.stdout.strip()}
    hostile = _create_key(env, "hostile", [])
    hostile.check_returncode()
    keys["hostile"] = hostile.stdout.strip()

    log_path = tmp / "gateway.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "voxrouter.cli", "serve", "--port", str(port), "--log-level", "warning"],
            env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )
    watch = RssWatch(proc, args.max_rss_mb).start()
    died = None
    phases: list[PhaseStats] = []
    outcomes = Outcomes()
    after = "not checked"
    idle_kb = 0
    try:
        ready_s = _wait_ready(url, proc)
        time.sleep(1)
        idle_kb = watch.sample() or 0
        print(
            f"gateway on {url} ready in {ready_s:.1f}s (config {env['VOXROUTER_CONFIG']}, db and log in {tmp});"
            f" idle RSS {idle_kb / 1024:.0f} MB, cap {args.max_rss_mb:g} MB", flush=True
        )
        phases, outcomes, after = asyncio.run(run_phases(url, port, keys, args, plan, watch, proc))
    except RuntimeError as exc:
        died = str(exc)
    finally:
        watch.stop()
        if proc.poll() is not None:
            if watch.killed_at_kb is not None:
                died = f"killed by the bench at {watch.killed_at_kb / 1024:.0f} MB RSS (cap {args.max_rss_mb:g} MB) during phase {watch.phase!r}"
            elif died is None:
                died = f"exited with {proc.returncode} during phase {watch.phase!r}"
        for p in phases:
            p.peak_kb = watch.peaks.get(p.name, 0)
        if watch.peaks.get("after"):
            after += f"; peak RSS after the attack {watch.peaks['after'] / 1024:.0f} MB"
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                _kill_group(proc)
                proc.wait(timeout=10)
    report(phases, idle_kb, max(watch.peaks.values(), default=0), outcomes, after, died)
    if died:
        tail = log_path.read_text(encoding="utf-8", errors="replace")[-3000:]
        print(f"\ngateway log tail ({log_path}):\n{tail}")
        sys.exit(1)


if __name__ == "__main__":
    main()
