#!/usr/bin/env python3
"""Snapshot subnet 72's metagraph into a JSON file that cascade's blacklist reads.

  metagraph_sync.py [--network finney] [--netuid 72] [--out policies/metagraph.json]
                    [--once] [--every-blocks 100] [--poll-s 12] [--timeout-s 120]

Default: sync, then wait until the chain has advanced --every-blocks blocks (the reference
miner resyncs every 100 blocks, ~20 min), sync again, forever. --once: one sync, exit 0 or 1.

The file is replaced atomically (PATH.tmp-<pid>, fsync, rename): a reader sees the old or the
new snapshot, never half of one. A failed sync (chain unreachable, an SDK exception, a
metagraph of another netuid, zero neurons, arrays that disagree) is logged on one line and
leaves the last good file untouched; the loop retries with backoff.

Snapshot format, version 1 (the Rust server parses exactly this):
  {"version": 1, "network": "finney", "netuid": 72, "block": 5123456, "taken_at": 1764470000.25,
   "neurons": [{"uid": 0, "hotkey": "5F...", "coldkey": "5C...", "stake": 1234.5,
                "validator_permit": true, "ip": "1.2.3.4", "port": 8091}, ...]}
"""

import argparse
import json
import math
import os
import signal
import sys
import threading
import time

SNAPSHOT_VERSION = 1
DEFAULT_OUT = "policies/metagraph.json"


class SyncError(Exception):
    """A sync that must not replace the last good snapshot; str() is the one-line reason."""


class _Stop(BaseException):
    """SIGTERM/SIGINT: leave the loop (not an Exception, so no handler swallows it)."""


class _ChainTimeout(BaseException):
    """A chain call past its deadline (a BaseException, so no `except Exception` in the SDK's
    retry paths swallows it)."""


def log(msg):
    ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
    print(f"{ts}Z metagraph_sync: {msg}", file=sys.stderr, flush=True)


def _one_line(exc):
    text = " ".join(str(exc).split())
    if len(text) > 300:
        text = text[:297] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# ---------------------------------------------------------------------------------------------
# Snapshot construction and validation


def _as_list(x, what):
    """A metagraph array (numpy, torch or list) as a Python list; SyncError if it is not one."""
    if x is None:
        raise SyncError(f"metagraph.{what} is missing")
    if hasattr(x, "tolist") and getattr(x, "ndim", 1) == 0:
        raise SyncError(f"metagraph.{what} is a scalar, not an array")
    try:
        return list(x)
    except TypeError:
        raise SyncError(f"metagraph.{what} is not an array ({type(x).__name__})") from None


def _as_int(v, what):
    if isinstance(v, bool):
        raise SyncError(f"{what} is a bool, not an integer")
    if hasattr(v, "item"):  # numpy / torch scalar
        v = v.item()
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if not isinstance(v, int):
        raise SyncError(f"{what} is not an integer: {v!r}")
    return v


def _stake_float(v, uid):
    """metagraph.S[uid] as a float. The SDK keeps S as float32: print the shortest decimal that
    is that float32 (1234.5, 0.1), not its float64 widening (0.10000000149011612)."""
    try:
        import numpy as np  # the SDK's arrays are numpy; without numpy there is nothing to shorten

        if isinstance(v, np.floating) and v.dtype == np.float32:
            f = float(str(v))
        else:
            f = float(v)
    except ImportError:
        f = float(v)
    except (TypeError, ValueError):
        raise SyncError(f"stake of uid {uid} is not a number: {v!r}") from None
    if not math.isfinite(f) or f < 0:
        raise SyncError(f"stake of uid {uid} is {f!r} (must be finite and >= 0)")
    return f


def _permit_bool(v, uid):
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, bool):
        return v
    if isinstance(v, int) and v in (0, 1):
        return bool(v)
    raise SyncError(f"validator_permit of uid {uid} is not a bool: {v!r}")


def build_snapshot(metagraph, netuid, network_name, taken_at=None):
    """The version-1 snapshot dict of `metagraph`, or SyncError naming what is wrong with it."""
    mg_netuid = getattr(metagraph, "netuid", None)
    try:
        mg_netuid = _as_int(mg_netuid, "metagraph.netuid")
    except SyncError:
        raise SyncError(f"metagraph.netuid is {mg_netuid!r}, expected {netuid}") from None
    if mg_netuid != netuid:
        raise SyncError(f"netuid mismatch: asked for netuid {netuid}, the metagraph is for netuid {mg_netuid}")

    block = _as_int(getattr(metagraph, "block", None), "metagraph.block")
    if block < 0:
        raise SyncError(f"metagraph.block is negative: {block}")

    hotkeys = _as_list(getattr(metagraph, "hotkeys", None), "hotkeys")
    coldkeys = _as_list(getattr(metagraph, "coldkeys", None), "coldkeys")
    stakes = _as_list(getattr(metagraph, "S", None), "S")
    permits = _as_list(getattr(metagraph, "validator_permit", None), "validator_permit")
    axons = _as_list(getattr(metagraph, "axons", None), "axons")
    uids = _as_list(getattr(metagraph, "uids", None), "uids")

    n = len(hotkeys)
    if n == 0:
        raise SyncError(f"the metagraph of netuid {netuid} at block {block} has 0 neurons")
    counts = {
        "hotkeys": n,
        "coldkeys": len(coldkeys),
        "S": len(stakes),
        "validator_permit": len(permits),
        "axons": len(axons),
        "uids": len(uids),
    }
    if len(set(counts.values())) != 1:
        raise SyncError("array lengths disagree: " + ", ".join(f"{k}={v}" for k, v in counts.items()))

    neurons = []
    seen_uids = set()  # a hotkey at several uids is kept: the server admits on its best standing
    for i in range(n):
        uid = _as_int(uids[i], f"uids[{i}]")
        if uid < 0 or uid in seen_uids:
            raise SyncError(f"uids[{i}] = {uid} is negative or repeated")
        seen_uids.add(uid)
        hk, ck = hotkeys[i], coldkeys[i]
        if not isinstance(hk, str) or not hk:
            raise SyncError(f"hotkey of uid {uid} is not a non-empty string: {hk!r}")
        if not isinstance(ck, str) or not ck:
            raise SyncError(f"coldkey of uid {uid} is not a non-empty string: {ck!r}")
        axon = axons[i]
        ip = getattr(axon, "ip", None)
        port = getattr(axon, "port", None)
        if not isinstance(ip, str) or not ip:
            raise SyncError(f"axon ip of uid {uid} is not a string: {ip!r}")
        port = _as_int(port, f"axon port of uid {uid}")
        if not 0 <= port <= 65535:
            raise SyncError(f"axon port of uid {uid} is out of range: {port}")
        axon_hk = getattr(axon, "hotkey", hk)
        if axon_hk != hk:
            raise SyncError(f"axons[{i}].hotkey {axon_hk!r} is not hotkeys[{i}] {hk!r}")
        neurons.append(
            {
                "uid": uid,
                "hotkey": hk,
                "coldkey": ck,
                "stake": _stake_float(stakes[i], uid),
                "validator_permit": _permit_bool(permits[i], uid),
                "ip": ip,
                "port": port,
            }
        )

    return {
        "version": SNAPSHOT_VERSION,
        "network": network_name,
        "netuid": netuid,
        "block": block,
        "taken_at": float(time.time() if taken_at is None else taken_at),
        "neurons": neurons,
    }


def render(snapshot):
    """JSON text, one neuron a line (readable, diffable); strict JSON (no NaN)."""
    head = {k: v for k, v in snapshot.items() if k != "neurons"}
    lines = [json.dumps(nrn, allow_nan=False, ensure_ascii=True) for nrn in snapshot["neurons"]]
    text = json.dumps(head, allow_nan=False)[:-1] + ', "neurons": [\n  ' + ",\n  ".join(lines) + "\n]}\n"
    json.loads(text)  # never write something that does not parse back
    return text


def write_atomic(path, text):
    """Write `text` to `path` so a reader sees either the old or the new file, whole."""
    path = os.path.abspath(path)
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:  # make the rename itself durable
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def _previous_block(path, network_name, netuid):
    """Block of the snapshot already at `path` for the same network and netuid, or None."""
    try:
        with open(path, encoding="utf-8") as f:
            old = json.load(f)
        if old.get("network") == network_name and old.get("netuid") == netuid:
            b = old.get("block")
            return b if isinstance(b, int) and not isinstance(b, bool) else None
    except (OSError, ValueError, AttributeError):
        pass
    return None


def sync_once(subtensor, netuid, out_path, network_name):
    """Read the metagraph from `subtensor`, validate it, write the snapshot to `out_path`.

    Returns the snapshot dict. Raises SyncError (one-line reason) and leaves `out_path` untouched
    when anything is wrong: an exception from the SDK, a bad answer, a node behind the snapshot
    already on disk.
    """
    try:
        metagraph = subtensor.metagraph(netuid)
    except (SyncError, _Stop, KeyboardInterrupt):
        raise
    except _ChainTimeout as e:
        raise SyncError(f"metagraph({netuid}) timed out: {e}") from None
    except BaseException as e:  # the SDK may also sys.exit() on connection trouble
        raise SyncError(f"metagraph({netuid}) failed: {_one_line(e)}") from None
    if metagraph is None:
        raise SyncError(f"metagraph({netuid}) returned None")
    snapshot = build_snapshot(metagraph, netuid, network_name)
    prev = _previous_block(out_path, network_name, netuid)
    if prev is not None and snapshot["block"] < prev:
        raise SyncError(
            f"the node is behind: its metagraph is at block {snapshot['block']}, "
            f"{out_path} already holds block {prev}"
        )
    write_atomic(out_path, render(snapshot))
    return snapshot


# ---------------------------------------------------------------------------------------------
# The loop


def _kept(path):
    return f"kept the last good {path}" if os.path.exists(path) else f"{path} not written"


def _close(subtensor):
    try:
        if subtensor is not None and hasattr(subtensor, "close"):
            subtensor.close()
    except BaseException:
        pass


def run_loop(
    make_subtensor,
    netuid,
    out_path,
    network_name,
    every_blocks=100,
    poll_s=12.0,
    retry_s=12.0,
    retry_max_s=300.0,
    sleep=time.sleep,
    stop=None,
    max_syncs=None,
):
    """Sync, wait `every_blocks` blocks, repeat until `stop` is set (or `max_syncs` good syncs).

    `make_subtensor()` builds a connection; it is rebuilt after any failure. Returns the number
    of good syncs."""
    stop = stop or threading.Event()
    subtensor = None
    good = 0
    backoff = retry_s
    last_block = None
    try:
        while not stop.is_set():
            # -- sync (with backoff on failure) --
            try:
                if subtensor is None:
                    try:
                        subtensor = make_subtensor()
                    except (_Stop, KeyboardInterrupt):
                        raise
                    except BaseException as e:
                        raise SyncError(f"cannot connect to {network_name}: {_one_line(e)}") from None
                snap = sync_once(subtensor, netuid, out_path, network_name)
            except SyncError as e:
                log(f"sync failed ({_kept(out_path)}; retry in {backoff:.0f} s): {e}")
                _close(subtensor)
                subtensor = None
                sleep(backoff)
                backoff = min(backoff * 2, retry_max_s)
                continue
            good += 1
            backoff = retry_s
            last_block = snap["block"]
            n_permit = sum(1 for x in snap["neurons"] if x["validator_permit"])
            log(
                f"wrote {out_path}: block {last_block}, {len(snap['neurons'])} neurons, "
                f"{n_permit} with a validator permit"
            )
            if max_syncs is not None and good >= max_syncs:
                break
            # -- wait until the chain has advanced every_blocks --
            target = last_block + every_blocks
            while not stop.is_set():
                sleep(poll_s)
                try:
                    if subtensor is None:
                        subtensor = make_subtensor()
                    current = _as_int(subtensor.get_current_block(), "current block")
                except (_Stop, KeyboardInterrupt):
                    raise
                except BaseException as e:
                    log(f"cannot read the current block ({_one_line(e)}); reconnecting")
                    _close(subtensor)
                    subtensor = None
                    continue
                if current >= target:
                    break
    finally:
        _close(subtensor)
    return good


# ---------------------------------------------------------------------------------------------
# CLI


class _Deadline:
    """Raise _ChainTimeout in the main thread if a chain call takes longer than `seconds`."""

    def __init__(self, seconds):
        self.seconds = seconds
        self.usable = seconds and seconds > 0 and threading.current_thread() is threading.main_thread()

    def __enter__(self):
        if self.usable:
            def on_alarm(signum, frame):
                raise _ChainTimeout(f"no answer within {self.seconds:g} s")

            self.old = signal.signal(signal.SIGALRM, on_alarm)
            signal.setitimer(signal.ITIMER_REAL, self.seconds)
        return self

    def __exit__(self, *exc):
        if self.usable:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, self.old)
        return False


class _TimedSubtensor:
    """Wraps a Subtensor so each chain call the programs make has a deadline."""

    def __init__(self, inner, timeout_s):
        self.inner = inner
        self.timeout_s = timeout_s

    def metagraph(self, netuid):
        with _Deadline(self.timeout_s):
            return self.inner.metagraph(netuid)

    def get_current_block(self):
        with _Deadline(self.timeout_s):
            return self.inner.get_current_block()

    def close(self):
        _close(self.inner)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--network", default="finney", help="finney, test, local, or a ws(s):// endpoint")
    p.add_argument("--netuid", type=int, default=72)
    p.add_argument("--out", default=DEFAULT_OUT, help=f"snapshot path (default {DEFAULT_OUT})")
    p.add_argument("--once", action="store_true", help="one sync; exit 0 if the file was written, else 1")
    p.add_argument("--every-blocks", type=int, default=100, help="blocks between syncs (default 100)")
    p.add_argument("--poll-s", type=float, default=12.0, help="seconds between block-height polls")
    p.add_argument("--retry-s", type=float, default=12.0, help="first retry delay after a failure")
    p.add_argument("--retry-max-s", type=float, default=300.0, help="longest retry delay")
    p.add_argument("--timeout-s", type=float, default=120.0, help="deadline of one chain call (0: none)")
    args = p.parse_args(argv)

    if ".tmp" in os.path.basename(args.out):
        p.error(f"--out {args.out}: the name must not contain '.tmp' (the server ignores such files)")
    if args.netuid < 0 or args.every_blocks < 1 or args.poll_s <= 0 or args.retry_s <= 0:
        p.error("--netuid must be >= 0, --every-blocks >= 1, --poll-s and --retry-s > 0")

    def on_term(signum, frame):
        raise _Stop()

    signal.signal(signal.SIGTERM, on_term)

    def make_subtensor():
        import bittensor as bt

        with _Deadline(args.timeout_s):
            return _TimedSubtensor(bt.Subtensor(network=args.network), args.timeout_s)

    try:
        if args.once:
            subtensor = None
            try:
                try:
                    subtensor = make_subtensor()
                except (_Stop, KeyboardInterrupt):
                    raise
                except BaseException as e:
                    raise SyncError(f"cannot connect to {args.network}: {_one_line(e)}") from None
                snap = sync_once(subtensor, args.netuid, args.out, args.network)
            except SyncError as e:
                log(f"sync failed ({_kept(args.out)}): {e}")
                return 1
            finally:
                _close(subtensor)
            log(f"wrote {args.out}: block {snap['block']}, {len(snap['neurons'])} neurons")
            return 0
        run_loop(
            make_subtensor,
            args.netuid,
            args.out,
            args.network,
            every_blocks=args.every_blocks,
            poll_s=args.poll_s,
            retry_s=args.retry_s,
            retry_max_s=args.retry_max_s,
        )
        return 0
    except (_Stop, KeyboardInterrupt):
        log("stopped")
        return 0


if __name__ == "__main__":
    sys.exit(main())
