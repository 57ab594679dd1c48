"""Tests of metagraph_sync.py and announce.py against the real bittensor 9.12.2 SDK, no network.

  .cache/bt-venv/bin/python -m unittest discover -s scripts/chain -p 'test_*.py'

The chain is the SDK's own MockSubtensor (bittensor/utils/mock/subtensor_mock.py): its
create_subnet, force_register_neuron, neurons_lite, neuron_for_uid, get_current_block and
do_block_step keep a real in-memory chain state, and the SDK's real Metagraph.sync runs over
it. The mock predates the calls 9.12.2's Metagraph.sync and serving extrinsic make, so
`Chain` below adds exactly those, answering from the mock's own state:
  - query_runtime_api(SubnetInfoRuntimeApi.get_subnet_state): stakes come from the mock's Stake
    storage (without it S is empty: the mock's substrate is a MagicMock);
  - get_metagraph_info -> None, get_mechanism_count -> 1, get_mechanism_emission_split -> None
    (the mock's MagicMock answer crashes MetagraphInfo.from_dict; None is what the SDK's own
    code handles as "not available");
  - get_neuron_for_pubkey_and_subnet: the Uids storage, then the mock's neuron_for_uid;
  - substrate.compose_call + sign_and_send_extrinsic: record a SubtensorModule.serve_axon call
    into the mock's Axons storage (what the chain does), refusing unregistered hotkeys and
    calls not signed by the hotkey they serve;
  - set_validator_permit: writes the ValidatorPermit storage the mock reads.
Malformed answers (arrays that disagree, NaN stake, a non-string hotkey) cannot come out of the
real Metagraph, so those few cases use a plain stand-in object with the same attributes.
"""

import contextlib
import io
import ipaddress
import json
import math
import os
import socket
import subprocess
import sys
import tempfile
import time
import types
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

# ---- no traffic leaves loopback -------------------------------------------------------------
_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex


def _check_addr(sock, address):
    if sock.family in (socket.AF_INET, socket.AF_INET6) and isinstance(address, tuple):
        host = address[0]
        try:
            loop = ipaddress.ip_address(host.split("%")[0]).is_loopback
        except ValueError:
            loop = host == "localhost"
        if not loop:
            raise OSError(f"test guard: connection to {address!r} refused (no network in tests)")


def _guarded_connect(self, address):
    _check_addr(self, address)
    return _real_connect(self, address)


def _guarded_connect_ex(self, address):
    _check_addr(self, address)
    return _real_connect_ex(self, address)


socket.socket.connect = _guarded_connect
socket.socket.connect_ex = _guarded_connect_ex

import bittensor as bt  # noqa: E402
import bittensor.utils.networking as networking  # noqa: E402

networking.get_external_ip = lambda: "127.0.0.1"

from bittensor.core.chain_data import NeuronInfo  # noqa: E402
from bittensor.utils.mock.subtensor_mock import AxonInfoDict, MockSubtensor  # noqa: E402

import announce  # noqa: E402
import metagraph_sync as ms  # noqa: E402

NETUID = 72
VENV_PY = sys.executable


class Chain(MockSubtensor):
    """The SDK's MockSubtensor plus the calls 9.12.2 makes that it lacks (see the module doc)."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.substrate.compose_call.side_effect = lambda call_module, call_function, call_params: {
            "call_module": call_module,
            "call_function": call_function,
            "call_params": dict(call_params),
        }
        if not hasattr(self, "extrinsics"):
            self.extrinsics = []

    # -- chain state helpers (tests only) --
    def set_validator_permit(self, netuid, uid, permit):
        self.chain_state["SubtensorModule"]["ValidatorPermit"][netuid][uid][self.block_number] = permit

    def steps(self, n):
        for _ in range(n):
            self.do_block_step()

    def _uid(self, netuid, hotkey):
        uids = self.chain_state["SubtensorModule"]["Uids"].get(netuid, {})
        return self._get_most_recent_storage(uids[hotkey]) if hotkey in uids else None

    # -- what 9.12.2 calls and the mock lacks --
    def query_runtime_api(self, runtime_api, method, params=None, block=None):
        if (runtime_api, method) != ("SubnetInfoRuntimeApi", "get_subnet_state"):
            raise NotImplementedError(f"Chain stand-in: {runtime_api}.{method}")
        netuid = params[0]
        neurons = self.neurons_lite(netuid, block)
        rao = [n.stake.rao for n in neurons]
        zeros = [0] * len(neurons)
        return {
            "netuid": netuid,
            "active": [n.active for n in neurons],
            "validator_permit": [n.validator_permit for n in neurons],
            "pruning_score": zeros,
            "last_update": [n.last_update for n in neurons],
            "emission": zeros,
            "dividends": zeros,
            "incentives": zeros,
            "consensus": zeros,
            "trust": zeros,
            "rank": zeros,
            "block_at_registration": zeros,
            "alpha_stake": rao,
            "tao_stake": zeros,
            "total_stake": rao,
            "emission_history": [],
        }

    def get_metagraph_info(self, *a, **kw):
        return None

    def get_mechanism_count(self, *a, **kw):
        return 1

    def get_mechanism_emission_split(self, *a, **kw):
        return None

    def get_neuron_for_pubkey_and_subnet(self, hotkey_ss58, netuid, block=None):
        uid = self._uid(netuid, hotkey_ss58)
        if uid is None:
            return NeuronInfo.get_null_neuron()
        return self.neuron_for_uid(uid, netuid, block)

    def sign_and_send_extrinsic(self, call, wallet, wait_for_inclusion=True, wait_for_finalization=False,
                                sign_with="coldkey", **kw):
        self.extrinsics.append((call, sign_with))
        if (call["call_module"], call["call_function"]) != ("SubtensorModule", "serve_axon"):
            return False, f"Chain stand-in: unexpected {call['call_module']}.{call['call_function']}"
        p = call["call_params"]
        signer = getattr(wallet, sign_with).ss58_address
        if signer != p["hotkey"]:
            return False, "BadOrigin: serve_axon must be signed by the hotkey it serves"
        if self._uid(p["netuid"], signer) is None:
            return False, "HotKeyNotRegisteredInNetwork"
        self.chain_state["SubtensorModule"]["Axons"][p["netuid"]][signer][self.block_number] = AxonInfoDict(
            block=self.block_number, version=p["version"], ip=p["ip"], port=p["port"], ip_type=p["ip_type"],
            protocol=p["protocol"], placeholder1=p["placeholder1"], placeholder2=p["placeholder2"],
        )
        return True, ""


def fresh_chain():
    MockSubtensor.reset()  # the mock keeps one global state
    chain = Chain()
    chain.create_subnet(NETUID)
    return chain


def make_wallet(path, name, hotkey="default"):
    w = bt.Wallet(name=name, hotkey=hotkey, path=path)
    w.create_if_non_existent(coldkey_use_password=False, hotkey_use_password=False, suppress=True)
    return w


class Tmp(unittest.TestCase):
    def setUp(self):
        self._tmp = tempfile.TemporaryDirectory()
        self.tmp = self._tmp.name

    def tearDown(self):
        self._tmp.cleanup()


# =============================================================================================
# metagraph_sync


class SyncTest(Tmp):
    @classmethod
    def setUpClass(cls):
        d = tempfile.mkdtemp()
        cls.validator = make_wallet(d, "validator")
        cls.miner = make_wallet(d, "miner")

    def chain_with_two(self):
        chain = fresh_chain()
        chain.steps(5)
        v = chain.force_register_neuron(NETUID, self.validator.hotkey.ss58_address,
                                        self.validator.coldkeypub.ss58_address, stake=1234.5)
        m = chain.force_register_neuron(NETUID, self.miner.hotkey.ss58_address,
                                        self.miner.coldkeypub.ss58_address, stake=0.1)
        chain.set_validator_permit(NETUID, v, True)
        chain.steps(3)
        return chain, v, m

    def out(self):
        return os.path.join(self.tmp, "policies", "metagraph.json")

    def test_snapshot_format_and_atomic_write(self):
        chain, v, m = self.chain_with_two()
        out = self.out()
        snap = ms.sync_once(chain, NETUID, out, "finney")
        with open(out) as f:
            disk = json.load(f)
        self.assertEqual(disk, snap)
        self.assertEqual(list(disk), ["version", "network", "netuid", "block", "taken_at", "neurons"])
        self.assertEqual(disk["version"], 1)
        self.assertEqual(disk["network"], "finney")
        self.assertEqual(disk["netuid"], NETUID)
        self.assertEqual(disk["block"], 8)
        self.assertIsInstance(disk["taken_at"], float)
        self.assertLess(abs(disk["taken_at"] - time.time()), 60)
        self.assertEqual(
            disk["neurons"],
            [
                {"uid": v, "hotkey": self.validator.hotkey.ss58_address,
                 "coldkey": self.validator.coldkeypub.ss58_address, "stake": 1234.5,
                 "validator_permit": True, "ip": "0.0.0.0", "port": 0},
                {"uid": m, "hotkey": self.miner.hotkey.ss58_address,
                 "coldkey": self.miner.coldkeypub.ss58_address, "stake": 0.1,
                 "validator_permit": False, "ip": "0.0.0.0", "port": 0},
            ],
        )
        for n in disk["neurons"]:
            self.assertEqual(list(n), ["uid", "hotkey", "coldkey", "stake", "validator_permit", "ip", "port"])
        self.assertEqual(os.listdir(os.path.dirname(out)), ["metagraph.json"])  # no tmp file left

    def test_served_axon_shows_in_snapshot(self):
        chain, v, m = self.chain_with_two()
        ok, msg = chain.sign_and_send_extrinsic(
            chain.substrate.compose_call(call_module="SubtensorModule", call_function="serve_axon", call_params={
                "version": 1, "ip": networking.ip_to_int("8.8.4.4"), "port": 8101, "ip_type": 4,
                "netuid": NETUID, "hotkey": self.miner.hotkey.ss58_address, "coldkey": "",
                "protocol": 4, "placeholder1": 0, "placeholder2": 0}),
            self.miner, sign_with="hotkey")
        self.assertTrue(ok, msg)
        snap = ms.sync_once(chain, NETUID, self.out(), "finney")
        self.assertEqual((snap["neurons"][m]["ip"], snap["neurons"][m]["port"]), ("8.8.4.4", 8101))

    def assert_failure_keeps_file(self, subtensor, expect):
        chain, _, _ = self.chain_with_two()
        out = self.out()
        ms.sync_once(chain, NETUID, out, "finney")
        with open(out, "rb") as f:
            before = f.read()
        with self.assertRaises(ms.SyncError) as cm:
            ms.sync_once(subtensor if subtensor is not None else chain, NETUID, out, "finney")
        self.assertIn(expect, str(cm.exception))
        self.assertNotIn("\n", str(cm.exception))
        with open(out, "rb") as f:
            self.assertEqual(f.read(), before)
        self.assertEqual(os.listdir(os.path.dirname(out)), ["metagraph.json"])
        return str(cm.exception)

    def test_failure_subtensor_raises(self):
        class Broken:
            def metagraph(self, netuid):
                raise ConnectionError("websocket closed by peer")

        msg = self.assert_failure_keeps_file(Broken(), "metagraph(72) failed: ConnectionError: websocket closed by peer")
        self.assertTrue(msg.startswith("metagraph(72) failed"))

    def test_failure_sdk_sys_exit(self):
        class Exits:
            def metagraph(self, netuid):
                sys.exit(1)

        self.assert_failure_keeps_file(Exits(), "metagraph(72) failed: SystemExit")

    def test_failure_other_netuid(self):
        chain = fresh_chain()  # the real Metagraph of subnet 71 handed back for 72
        chain.create_subnet(71)
        chain.force_register_neuron(71, self.miner.hotkey.ss58_address, self.miner.coldkeypub.ss58_address)
        other = chain.metagraph(71)
        # first write a good netuid-72 file, then answer with the netuid-71 metagraph
        chain.force_register_neuron(NETUID, self.miner.hotkey.ss58_address, self.miner.coldkeypub.ss58_address)
        out = self.out()
        ms.sync_once(chain, NETUID, out, "finney")
        with open(out, "rb") as f:
            before = f.read()
        with self.assertRaises(ms.SyncError) as cm:
            ms.sync_once(types.SimpleNamespace(metagraph=lambda n: other), NETUID, out, "finney")
        self.assertEqual(str(cm.exception), "netuid mismatch: asked for netuid 72, the metagraph is for netuid 71")
        with open(out, "rb") as f:
            self.assertEqual(f.read(), before)

    def test_failure_zero_neurons(self):
        empty = fresh_chain()  # subnet 72 exists with no neuron: the real Metagraph, n = 0
        empty.steps(2)
        mg = empty.metagraph(NETUID)
        self.assertEqual(len(mg.hotkeys), 0)
        self.assert_failure_keeps_file(types.SimpleNamespace(metagraph=lambda n: mg),
                                       "the metagraph of netuid 72 at block 2 has 0 neurons")

    def test_failure_missing_subnet(self):
        chain, _, _ = self.chain_with_two()
        out = self.out()
        ms.sync_once(chain, NETUID, out, "finney")
        with self.assertRaises(ms.SyncError) as cm:
            ms.sync_once(chain, 99, out, "finney")
        self.assertEqual(str(cm.exception), "metagraph(99) failed: Exception: Subnet does not exist")

    def test_failure_node_behind(self):
        chain, _, _ = self.chain_with_two()
        mg_old = chain.metagraph(NETUID)
        chain.steps(10)
        out = self.out()
        ms.sync_once(chain, NETUID, out, "finney")
        with open(out, "rb") as f:
            before = f.read()
        with self.assertRaises(ms.SyncError) as cm:
            ms.sync_once(types.SimpleNamespace(metagraph=lambda n: mg_old), NETUID, out, "finney")
        self.assertEqual(str(cm.exception),
                         f"the node is behind: its metagraph is at block 8, {out} already holds block 18")
        with open(out, "rb") as f:
            self.assertEqual(f.read(), before)
        # another network's file does not count
        self.assertEqual(ms.sync_once(types.SimpleNamespace(metagraph=lambda n: mg_old), NETUID, out,
                                      "test")["block"], 8)

    # malformed answers: a stand-in with the Metagraph's attributes
    def garbage(self, **over):
        ax = lambda hk: types.SimpleNamespace(ip="1.2.3.4", port=8091, hotkey=hk)  # noqa: E731
        mg = dict(netuid=NETUID, block=100, hotkeys=["5A", "5B"], coldkeys=["5C", "5D"], S=[1.0, 2.0],
                  validator_permit=[True, False], axons=[ax("5A"), ax("5B")], uids=[0, 1])
        mg.update(over)
        return types.SimpleNamespace(metagraph=lambda n: types.SimpleNamespace(**mg))

    def test_failure_garbage(self):
        cases = {
            "array lengths disagree: hotkeys=2, coldkeys=2, S=1, validator_permit=2, axons=2, uids=2":
                self.garbage(S=[1.0]),
            "hotkey of uid 1 is not a non-empty string: 7": self.garbage(hotkeys=["5A", 7]),
            "stake of uid 0 is nan (must be finite and >= 0)": self.garbage(S=[math.nan, 1.0]),
            "uids[1] = 0 is negative or repeated": self.garbage(uids=[0, 0]),
            "metagraph.block is not an integer: 'x'": self.garbage(block="x"),
        }
        for expect, sub in cases.items():
            with self.subTest(expect=expect):
                self.assert_failure_keeps_file(sub, expect)

    def test_stand_in_snapshot_passes(self):
        snap = ms.sync_once(self.garbage(), NETUID, self.out(), "test")
        self.assertEqual([n["uid"] for n in snap["neurons"]], [0, 1])

    def test_loop_resyncs_every_n_blocks_and_retries(self):
        chain, _, _ = self.chain_with_two()
        out = self.out()
        calls = {"make": 0}

        def make():
            calls["make"] += 1
            if calls["make"] == 1:
                raise ConnectionError("refused")  # first connection fails: backoff, reconnect
            return chain

        slept = []

        def sleep(s):  # every poll, the chain advances 30 blocks
            slept.append(s)
            chain.steps(30)

        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            good = ms.run_loop(make, NETUID, out, "finney", every_blocks=100, poll_s=12, retry_s=5,
                               sleep=sleep, max_syncs=3)
        self.assertEqual(good, 3)
        log = err.getvalue().splitlines()
        self.assertEqual(len(log), 4)
        self.assertTrue(log[0].endswith(f"sync failed ({out} not written; retry in 5 s): "
                                        "cannot connect to finney: ConnectionError: refused"), log[0])
        self.assertTrue(log[3].endswith(f"wrote {out}: block 278, 2 neurons, 1 with a validator permit"), log[3])
        with open(out) as f:
            snap = json.load(f)
        # first sync at block 38 (8 + one 30-block backoff sleep), then 4 polls = 120 blocks each
        self.assertEqual(snap["block"], 38 + 120 + 120)
        self.assertEqual(slept, [5] + [12] * 8)

    def test_cli_once_unreachable_chain_exit_1(self):
        out = self.out()
        os.makedirs(os.path.dirname(out))
        with open(out, "w") as f:
            f.write('{"version": 1, "old": true}')
        r = subprocess.run(
            [VENV_PY, os.path.join(HERE, "metagraph_sync.py"), "--once", "--network", "ws://127.0.0.1:9",
             "--out", out, "--timeout-s", "20"],
            capture_output=True, text=True, timeout=60,
        )
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("sync failed (kept the last good", r.stderr)
        self.assertIn("cannot connect to ws://127.0.0.1:9: ConnectionError", r.stderr)
        with open(out) as f:
            self.assertEqual(f.read(), '{"version": 1, "old": true}')

    def test_cli_refuses_tmp_name(self):
        err = io.StringIO()
        with self.assertRaises(SystemExit) as cm, contextlib.redirect_stderr(err):
            ms.main(["--once", "--out", os.path.join(self.tmp, "metagraph.tmp.json")])
        self.assertEqual(cm.exception.code, 2)
        self.assertIn("the name must not contain '.tmp'", err.getvalue())


# =============================================================================================
# announce


def write_policy(d, fname, body):
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, fname), "w") as f:
        f.write(body)


def policy(ss58, ip="8.8.8.8", port="port = 8101", wallet="miner", hotkey="speed", name="speed",
           listen='listen = "0.0.0.0:8101"'):
    return (f'name = "{name}"\nss58 = "{ss58}"\n[axon]\n{listen}\n[axon.announce]\n'
            f'wallet = "{wallet}"\nhotkey = "{hotkey}"\nip = "{ip}"\n{port}\n')


class AnnounceTest(Tmp):
    def setUp(self):
        super().setUp()
        self.wallets = os.path.join(self.tmp, "wallets")
        self.w = make_wallet(self.wallets, "miner", "speed")
        self.ss58 = self.w.hotkey.ss58_address
        self.pol = os.path.join(self.tmp, "policies")
        write_policy(self.pol, "models.toml", "this is = not [a hotkey file\n")  # never read
        write_policy(self.pol, "chain.toml", "garbage ==\n")  # never read

    def run_announce(self, *extra, make_subtensor=None):
        buf = io.StringIO()
        code = announce.main(["--policies", self.pol, "--wallet-path", self.wallets, *extra],
                             make_subtensor=make_subtensor, out=buf)
        return code, buf.getvalue()

    def no_chain(self, network):
        raise AssertionError("a dry run must not connect")

    def test_dry_run_line(self):
        write_policy(self.pol, "speed.toml", policy(self.ss58))
        write_policy(self.pol, "accuracy.toml", 'name = "accuracy"\n[router]\ncomponent = "x"\n')
        code, out = self.run_announce("--dry-run", make_subtensor=self.no_chain)
        self.assertEqual(code, 0, out)
        self.assertIn(f"note {os.path.join(self.pol, 'accuracy.toml')}: no [axon.announce], skipped", out)
        self.assertIn(
            f"dry-run speed: would publish netuid=72 hotkey={self.ss58} ip=8.8.8.8 port=8101 protocol=4 "
            f"(wallet miner/speed, coldkey {self.w.coldkeypub.ss58_address}, "
            f"from {os.path.join(self.pol, 'speed.toml')})", out)
        self.assertNotIn("models.toml", out)
        self.assertNotIn("chain.toml", out)

    def test_port_defaults(self):
        write_policy(self.pol, "speed.toml", policy(self.ss58, port="", listen='listen = "[::]:8202"'))
        code, out = self.run_announce("--dry-run")
        self.assertIn("ip=8.8.8.8 port=8202 protocol=4", out)
        write_policy(self.pol, "speed.toml", policy(self.ss58, port="", listen=""))
        code, out = self.run_announce("--dry-run", "--default-port", "9000")
        self.assertEqual(code, 0, out)
        self.assertIn("port=9000", out)
        write_policy(self.pol, "speed.toml", policy(self.ss58, port="port = 70000"))
        code, out = self.run_announce("--dry-run")
        self.assertEqual(code, 1)
        self.assertIn("[axon.announce] port 70000 is out of range 1..65535", out)

    def test_private_ip_refused_without_force(self):
        for ip, kind in (("192.168.1.20", "private"), ("127.0.0.1", "loopback/private"),
                         ("203.0.113.7", "a documentation address (RFC 5737/3849, for examples only)"),
                         ("198.51.100.20", "a documentation address (RFC 5737/3849, for examples only)")):
            with self.subTest(ip=ip):
                write_policy(self.pol, "speed.toml", policy(self.ss58, ip=ip))
                code, out = self.run_announce("--dry-run")
                self.assertEqual(code, 1, out)
                self.assertIn(f"FAIL {os.path.join(self.pol, 'speed.toml')}: ip {ip} is {kind}: "
                              "validators on the internet cannot reach it", out)
                self.assertIn("(refused; --force publishes it anyway)", out)
                self.assertNotIn(f"{ip} is private" if "documentation" in kind else "documentation address", out)
                self.assertNotIn("dry-run speed", out)
        code, out = self.run_announce("--dry-run", "--force")
        self.assertEqual(code, 0, out)
        self.assertIn("WARNING ip 198.51.100.20 is a documentation address", out)
        self.assertIn("ip=198.51.100.20 port=8101", out)

    def test_bad_ip(self):
        write_policy(self.pol, "speed.toml", policy(self.ss58, ip="1.2.3.4:8101"))
        code, out = self.run_announce("--dry-run")
        self.assertEqual(code, 1)
        self.assertIn("[axon.announce] ip '1.2.3.4:8101' is not an IPv4 or IPv6 address", out)

    def test_missing_wallet_paths(self):
        write_policy(self.pol, "speed.toml", policy(self.ss58))
        missing = os.path.join(self.tmp, "nowhere")
        buf = io.StringIO()
        code = announce.main(["--policies", self.pol, "--wallet-path", missing, "--dry-run"], out=buf)
        self.assertEqual(code, 1)
        self.assertIn(f"wallet path {missing} does not exist", buf.getvalue())

        write_policy(self.pol, "speed.toml", policy(self.ss58, wallet="other"))
        code, out = self.run_announce("--dry-run")
        self.assertEqual(code, 1)
        self.assertIn(f"wallet 'other' does not exist: no folder {os.path.join(self.wallets, 'other')}", out)

        write_policy(self.pol, "speed.toml", policy(self.ss58, hotkey="accuracy"))
        code, out = self.run_announce("--dry-run")
        self.assertEqual(code, 1)
        self.assertIn("hotkey 'accuracy' of wallet 'miner' does not exist: no file "
                      f"{os.path.join(self.wallets, 'miner', 'hotkeys', 'accuracy')}", out)

    def test_ss58_mismatch(self):
        w2 = bt.Wallet(name="miner", hotkey="accuracy", path=self.wallets)
        w2.create_new_hotkey(use_password=False, overwrite=False, suppress=True)
        other = w2.hotkey.ss58_address
        write_policy(self.pol, "speed.toml", policy(other))
        code, out = self.run_announce("--dry-run")
        self.assertEqual(code, 1)
        self.assertIn(f"ss58 mismatch: {os.path.join(self.pol, 'speed.toml')} says ss58 = {other}, but wallet "
                      f"miner/speed ({os.path.join(self.wallets, 'miner', 'hotkeys', 'speed')}) holds {self.ss58}",
                      out)

    def test_nothing_to_announce(self):
        write_policy(self.pol, "speed.toml", 'name = "speed"\n')
        code, out = self.run_announce("--dry-run")
        self.assertEqual(code, 1)
        self.assertIn("nothing to announce", out)

    def test_publish_on_mock_chain_and_read_back(self):
        chain = fresh_chain()
        uid = chain.force_register_neuron(NETUID, self.ss58, self.w.coldkeypub.ss58_address)
        chain.steps(2)
        write_policy(self.pol, "speed.toml", policy(self.ss58, ip="8.8.8.8"))
        networks = []

        def make(network):
            networks.append(network)
            return chain

        code, out = self.run_announce("--network", "test", make_subtensor=make)
        self.assertEqual(code, 0, out)
        self.assertEqual(networks, ["test"])
        self.assertIn(f"ok speed: uid {uid}: published netuid=72 hotkey={self.ss58} ip=8.8.8.8 port=8101 "
                      "protocol=4 (was 0.0.0.0:0); read back from chain", out)
        # the extrinsic the SDK composed: SubtensorModule.serve_axon signed by the hotkey
        (call, signer), = chain.extrinsics
        self.assertEqual(signer, "hotkey")
        self.assertEqual(call["call_function"], "serve_axon")
        p = call["call_params"]
        self.assertEqual((p["netuid"], p["ip"], p["port"], p["ip_type"], p["protocol"]),
                         (72, networking.ip_to_int("8.8.8.8"), 8101, 4, 4))
        self.assertEqual(p["version"], bt.core.settings.version_as_int)
        # read back through the SDK: neuron and the real Metagraph
        n = chain.get_neuron_for_pubkey_and_subnet(self.ss58, NETUID)
        self.assertEqual((n.axon_info.ip, n.axon_info.port, n.axon_info.ip_type), ("8.8.8.8", 8101, 4))
        self.assertTrue(chain.metagraph(NETUID).axons[uid].is_serving)
        # a second run finds it already there and sends nothing
        code, out = self.run_announce(make_subtensor=lambda net: chain)
        self.assertEqual(code, 0, out)
        self.assertIn(f"skip speed: uid {uid} already serves 8.8.8.8:8101 on netuid 72", out)
        self.assertEqual(len(chain.extrinsics), 1)
        # a new port is published again
        write_policy(self.pol, "speed.toml", policy(self.ss58, ip="8.8.8.8", port="port = 8102"))
        code, out = self.run_announce(make_subtensor=lambda net: chain)
        self.assertEqual(code, 0, out)
        self.assertIn("port=8102 protocol=4 (was 8.8.8.8:8101); read back from chain", out)

    def test_publish_unregistered_hotkey_fails(self):
        chain = fresh_chain()
        write_policy(self.pol, "speed.toml", policy(self.ss58))
        code, out = self.run_announce(make_subtensor=lambda net: chain)
        self.assertEqual(code, 1)
        self.assertIn(f"FAIL speed: hotkey {self.ss58} is not registered on netuid 72 (serving needs a UID)", out)
        self.assertEqual(chain.extrinsics, [])

    def test_publish_chain_refusal_reported(self):
        chain = fresh_chain()
        chain.force_register_neuron(NETUID, self.ss58, self.w.coldkeypub.ss58_address)
        chain.sign_and_send_extrinsic = lambda *a, **k: (False, "Subtensor returned `ServingRateLimitExceeded`")
        write_policy(self.pol, "speed.toml", policy(self.ss58))
        code, out = self.run_announce(make_subtensor=lambda net: chain)
        self.assertEqual(code, 1)
        self.assertIn("FAIL speed: the chain refused serve_axon: Subtensor returned `ServingRateLimitExceeded`", out)

    def test_unreachable_chain(self):
        write_policy(self.pol, "speed.toml", policy(self.ss58))
        code, out = self.run_announce("--network", "ws://127.0.0.1:9")
        self.assertEqual(code, 1)
        self.assertIn("FAIL speed: cannot connect to ws://127.0.0.1:9: ConnectionError", out)

    def test_cli_dry_run_subprocess(self):
        write_policy(self.pol, "speed.toml", policy(self.ss58))
        r = subprocess.run(
            [VENV_PY, os.path.join(HERE, "announce.py"), "--policies", self.pol, "--wallet-path", self.wallets,
             "--dry-run", "--network", "ws://127.0.0.1:9"],
            capture_output=True, text=True, timeout=60,
        )
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn(f"dry-run speed: would publish netuid=72 hotkey={self.ss58} ip=8.8.8.8 port=8101 protocol=4",
                      r.stdout)


if __name__ == "__main__":
    unittest.main()
