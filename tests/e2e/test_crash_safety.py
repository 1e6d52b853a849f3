"""kill -9 a gateway with streams in flight: its holds dangle, and the restarted gateway's
sweeper refunds each of them exactly once, without touching what was already settled."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid

import httpx

from tests.conftest import emulated_config
from tests.databases import fresh_database, query
from tests.processes import GatewayProcess, write_config
from voxrouter.providers.spec import estimate_cost_micros
from voxrouter.router.server_commands import create_key
from voxrouter.router.settings import Settings

LEASE_S = 2.0
SWEEP_S = 0.5
IN_FLIGHT = 8
COMPLETED_BEFORE = 3
TEXT = "x" * 100
COST = estimate_cost_micros(len(TEXT), 15_000)  # openai/tts-1
CREDIT = 1_000_000
BODY = {"model": "openai/tts-1", "voice": "alloy", "input": TEXT, "response_format": "pcm"}


def _one(url: str, sql: str, *args: object) -> tuple:
    rows = query(url, sql, *args)
    assert len(rows) == 1, rows
    return rows[0]


def _wallet(url: str, org_id: str) -> tuple[int, int]:
    balance, reserved = _one(url, "SELECT balance_micros, reserved_micros FROM wallets WHERE org_id = ?", org_id)
    return int(balance), int(reserved)


def _reservations(url: str, org_id: str) -> dict[str, str]:
    return {rid: state for rid, state in query(url, "SELECT id, state FROM reservations WHERE org_id = ?", org_id)}


def _settle_rows(url: str, org_id: str) -> dict[str, list[tuple[str, int, str]]]:
    """Per reservation: its ledger rows (kind, delta, source), oldest first."""
    rows = query(
        url,
        "SELECT reservation_id, kind, micros_delta, source FROM ledger WHERE org_id = ? AND reservation_id IS NOT NULL ORDER BY id",
        org_id,
    )
    out: dict[str, list[tuple[str, int, str]]] = {}
    for rid, kind, delta, source in rows:
        out.setdefault(rid, []).append((kind, int(delta), source))
    return out


def _ledger_sums(url: str, org_id: str) -> dict[str, tuple[int, int]]:
    rows = query(url, "SELECT kind, COUNT(*), COALESCE(SUM(micros_delta), 0) FROM ledger WHERE org_id = ? GROUP BY kind", org_id)
    return {kind: (int(count), int(total)) for kind, count, total in rows}


def test_kill_9_mid_stream_then_restart_refunds_every_hold_once(emulators, database_engine, tmp_path):
    config = emulated_config(emulators)
    config = config.model_copy(
        update={"wallet": config.wallet.model_copy(update={"reservation_lease_s": LEASE_S, "sweep_interval_s": SWEEP_S})}
    )
    config_path = write_config(config, tmp_path / "config.yaml")
    state = emulators["openai"].state
    with fresh_database(database_engine, tmp_path) as db:
        org = f"crash-{uuid.uuid4().hex[:8]}"
        key = asyncio.run(create_key(Settings(database_url=db), org, "crash", CREDIT))
        org_id = _one(db, "SELECT id FROM orgs WHERE name = ?", org)[0]
        headers = {"Authorization": f"Bearer {key}"}
        first = GatewayProcess(config_path, db, tmp_path / "first.log")
        second = GatewayProcess(config_path, db, tmp_path / "second.log")
        with first, second:
            first.start()
            limits = httpx.Limits(max_connections=IN_FLIGHT + 4)
            with httpx.Client(base_url=first.url, headers=headers, timeout=10, limits=limits) as client:
                # A few requests that finish: committed before the crash, never to be touched again.
                state.reset(stream_time_s=0.05, audio_duration_s=0.2)
                for _ in range(COMPLETED_BEFORE):
                    response = client.post("/v1/audio/speech", json=BODY)
                    assert response.status_code == 200 and len(response.content) == 9_600
                committed = {rid for rid, s in _reservations(db, org_id).items() if s == "committed"}
                assert len(committed) == COMPLETED_BEFORE

                # Then streams that stay open (20 s each), each delivering its first bytes.
                state.reset(stream_time_s=20.0, audio_duration_s=20.0, chunks=200)
                with contextlib.ExitStack() as streams:
                    readers = []  # kept alive: a dropped iterator closes its connection
                    for _ in range(IN_FLIGHT):
                        request = client.build_request("POST", "/v1/audio/speech", json=BODY)
                        response = client.send(request, stream=True)
                        streams.callback(response.close)
                        assert response.status_code == 200
                        readers.append(response.iter_raw())
                        assert len(next(readers[-1])) > 0
                    assert _wallet(db, org_id)[1] == IN_FLIGHT * COST
                    # Outlive one lease: the live process keeps renewing, so nothing expires or is swept.
                    time.sleep(LEASE_S * 1.25)
                    held = query(db, "SELECT state, expires_at_ms FROM reservations WHERE org_id = ? AND state = 'held'", org_id)
                    assert len(held) == IN_FLIGHT
                    assert min(int(expires) for _, expires in held) > time.time() * 1000
                    assert _wallet(db, org_id)[1] == IN_FLIGHT * COST

                    first.kill()  # SIGKILL while all of them are mid-stream
                    assert first.proc is not None and first.proc.returncode == -9

            # The dead process settled nothing: its holds dangle.
            dangling = {rid for rid, s in _reservations(db, org_id).items() if s == "held"}
            assert len(dangling) == IN_FLIGHT
            assert not dangling & committed
            balance, reserved = _wallet(db, org_id)
            assert (balance, reserved) == (CREDIT - COMPLETED_BEFORE * COST, IN_FLIGHT * COST)
            interrupted = query(
                db,
                "SELECT status, error_code FROM usage_records WHERE org_id = ? AND reservation_id IS NOT NULL AND status IS NULL",
                org_id,
            )
            assert len(interrupted) == IN_FLIGHT  # opened at reserve, never finished

            # Restart on the same database: the sweeper refunds them once their lease runs out.
            killed_at = time.monotonic()
            second.start()
            deadline = killed_at + LEASE_S + 10 * SWEEP_S + 10
            while _wallet(db, org_id)[1] != 0 or "held" in _reservations(db, org_id).values():
                assert time.monotonic() < deadline, f"holds not swept: {_reservations(db, org_id)}\n{second.log()}"
                time.sleep(0.1)

            reservations = _reservations(db, org_id)
            assert "held" not in reservations.values()
            assert {rid for rid, s in reservations.items() if s == "refunded"} == dangling
            assert {rid for rid, s in reservations.items() if s == "committed"} == committed
            ledger = _settle_rows(db, org_id)
            assert set(ledger) == set(reservations)
            for rid, rows in ledger.items():
                assert rows[0] == ("reserve", -COST, "speech"), (rid, rows)
                assert len(rows) == 2, (rid, rows)  # one reserve, exactly one settlement
                if rid in committed:
                    assert rows[1] == ("commit", -COST, "speech"), (rid, rows)
                else:
                    assert rows[1] == ("refund", COST, "sweeper"), (rid, rows)
            sums = _ledger_sums(db, org_id)
            balance, reserved = _wallet(db, org_id)
            assert (balance, reserved) == (CREDIT - COMPLETED_BEFORE * COST, 0)
            assert balance == sums["topup"][1] + sums["commit"][1]
            assert sums["topup"] == (1, CREDIT)
            assert sums["reserve"] == (COMPLETED_BEFORE + IN_FLIGHT, -(COMPLETED_BEFORE + IN_FLIGHT) * COST)
            assert sums["commit"] == (COMPLETED_BEFORE, -COMPLETED_BEFORE * COST)
            assert sums["refund"] == (IN_FLIGHT, IN_FLIGHT * COST)
            usage = query(db, "SELECT reservation_id, status, error_code, cost_micros FROM usage_records WHERE org_id = ?", org_id)
            assert len(usage) == COMPLETED_BEFORE + IN_FLIGHT
            for rid, status, error_code, cost in usage:
                if rid in dangling:
                    assert (status, error_code, cost) == (500, "interrupted", 0), rid
                else:
                    assert (status, error_code, cost) == (200, None, COST), rid

            # The key still works on the restarted gateway, and is charged once.
            state.reset(stream_time_s=0.05, audio_duration_s=0.2)
            response = httpx.post(second.url + "/v1/audio/speech", json=BODY, headers=headers, timeout=10)
            assert response.status_code == 200 and len(response.content) == 9_600
            credits = httpx.get(second.url + "/v1/credits", headers=headers, timeout=10).json()
            assert credits == {"balanceMicros": CREDIT - (COMPLETED_BEFORE + 1) * COST, "reservedMicros": 0}
            sums = _ledger_sums(db, org_id)
            assert sums["commit"] == (COMPLETED_BEFORE + 1, -(COMPLETED_BEFORE + 1) * COST)
            assert sums["refund"] == (IN_FLIGHT, IN_FLIGHT * COST)
            assert credits["balanceMicros"] == sums["topup"][1] + sums["commit"][1]
