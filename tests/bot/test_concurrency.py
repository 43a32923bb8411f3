"""Many processes on one store: concurrent downloads, imports and readers lose nothing and never fail.

Workers are forked processes (each its own file descriptors, so the ``flock`` locks really
exclude each other as between separate ``cascade`` runs); downloads go through ccxt's real HTTP
client to the replay exchange on 127.0.0.1.
"""

from __future__ import annotations

import multiprocessing as mp
import traceback
from pathlib import Path

import pandas as pd
import pytest

from bot.data import SAMPLE_DIR
from bot.download import Downloader
from bot.exchange import make_exchange
from bot.importers import Importer
from bot.replay import ReplayServer
from bot.store import DatasetKey, Store

EX, BTC = "binanceusdm", "BTC/USDT:USDT"
OHLCV = DatasetKey(EX, BTC, "ohlcv", "1h")
FUNDING = DatasetKey(EX, BTC, "funding_rate")
SINCE, MID, UNTIL = (pd.Timestamp(t, tz="UTC") for t in ("2025-03-10", "2025-03-25", "2025-04-10"))
TRIALS = 10
CTX = mp.get_context("fork")


def _in_child(fn, *args) -> None:
    try:
        fn(*args)
    except BaseException:  # noqa: BLE001 - report any failure through the exit code
        traceback.print_exc()
        raise SystemExit(1) from None


def _run_all(jobs: list[tuple]) -> None:
    procs = [CTX.Process(target=_in_child, args=job) for job in jobs]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0, f"worker failed with exit code {p.exitcode}"


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Store:
    sample, store = Store(SAMPLE_DIR), Store(tmp_path_factory.mktemp("source"))
    for key in (OHLCV, FUNDING):
        frame = sample.read(key)
        store.write(key, frame[(frame.index >= "2025-03-01") & (frame.index < "2025-04-20")])
    return store


def _download(url: str, root: str, since: pd.Timestamp, until: pd.Timestamp) -> None:
    client = make_exchange(EX, url=url, rate_limit=False, timeout=10000)
    Downloader(client, Store(root), page_limit=48, backoff_seconds=0.01).run(
        [BTC], "1h", ["ohlcv", "funding_rate"], since, until)


def test_two_downloads_on_split_ranges_lose_no_row(source, tmp_path):
    want = {k: source.read(k).loc[SINCE:UNTIL - pd.Timedelta(1, "ms")] for k in (OHLCV, FUNDING)}
    with ReplayServer(source.root, start="2025-05-01", speed=0) as srv:
        for trial in range(TRIALS):
            root = tmp_path / f"t{trial}"
            _run_all([(_download, srv.url, str(root), SINCE, MID), (_download, srv.url, str(root), MID, UNTIL)])
            store = Store(root)
            for key, frame in want.items():
                pd.testing.assert_frame_equal(store.read(key), frame, check_freq=False)
            assert not list(root.rglob(".cascade-*"))


def test_two_identical_downloads_at_once_both_succeed(source, tmp_path):
    """Same arguments: neither deletes the other's in-flight temporaries any more."""
    want = {k: source.read(k).loc[SINCE:UNTIL - pd.Timedelta(1, "ms")] for k in (OHLCV, FUNDING)}
    with ReplayServer(source.root, start="2025-05-01", speed=0) as srv:
        for trial in range(2):
            root = tmp_path / f"t{trial}"
            _run_all([(_download, srv.url, str(root), SINCE, UNTIL)] * 2)
            for key, frame in want.items():
                pd.testing.assert_frame_equal(Store(root).read(key), frame, check_freq=False)


def _import(path: str, root: str) -> None:
    Importer(Store(root), exchange=EX).import_path(Path(path))


def test_two_imports_of_halves_lose_no_row(tmp_path):
    frame = Store(SAMPLE_DIR).read(OHLCV).loc["2025-01-01":"2025-06-30"]
    halves = []
    for i, part in enumerate((frame.iloc[: len(frame) // 2], frame.iloc[len(frame) // 2:])):
        folder = tmp_path / f"half{i}"
        folder.mkdir()
        path = folder / "BTC_USDT_USDT-1h-futures.feather"
        part.reset_index().rename(columns={"time": "date"}).to_feather(path)
        halves.append(path)
    for trial in range(TRIALS):
        root = tmp_path / f"t{trial}"
        _run_all([(_import, str(halves[0]), str(root)), (_import, str(halves[1]), str(root))])
        pd.testing.assert_frame_equal(Store(root).read(OHLCV), frame, check_freq=False)


def _keep_writing(root: str, stop, wrote) -> None:
    store = Store(root)
    frame = Store(SAMPLE_DIR).read(OHLCV).iloc[:2000]
    for i in range(5000):  # bounded; normally stopped by the reader
        if stop.is_set():
            break
        store.write(OHLCV, frame.iloc[: 1000 + (i * 37) % 1000])  # every write replaces the file
        wrote.value = i + 1


def test_a_writer_racing_1000_reads_never_fails_a_reader(tmp_path):
    store = Store(tmp_path)
    first = Store(SAMPLE_DIR).read(OHLCV).iloc[:1000]
    store.write(OHLCV, first)
    stop, wrote = CTX.Event(), CTX.Value("i", 0)
    writer = CTX.Process(target=_in_child, args=(_keep_writing, str(tmp_path), stop, wrote))
    writer.start()
    try:
        lengths = set()
        for _ in range(1000):
            got = store.read(OHLCV)  # must never raise "corrupt" while files are being replaced
            assert got is not None and got.index.is_monotonic_increasing
            lengths.add(len(got))
    finally:
        stop.set()
        writer.join(60)
    assert writer.exitcode == 0 and wrote.value > 20  # the reads really raced many replacements
    assert lengths <= set(range(1000, 2001))
